"""The users list a user screen steps through: its query and one cached page of user ids."""

from __future__ import annotations

from dataclasses import dataclass, replace

from lampbox.store import browse
from lampbox.store.browse import Dataset
from lampbox.store.core import Store


@dataclass(frozen=True)
class UserList:
    """A sorted, searched users list, and the page of it last read (ids from `offset` on)."""

    dataset: Dataset
    search: str
    sort: str
    descending: bool
    offset: int
    user_ids: tuple[str, ...]
    total: int
    page_size: int

    def cached(self, index: int) -> str | None:
        position = index - self.offset
        return self.user_ids[position] if 0 <= position < len(self.user_ids) else None


def resolve_user(store: Store, users: UserList, index: int) -> tuple[UserList, str | None]:
    """The id of the user at `index`, reading the page that holds it when it is not cached."""
    cached = users.cached(index)
    if cached is not None or not 0 <= index < users.total:
        return users, cached
    offset = index - index % users.page_size
    page = browse.user_page(
        store,
        users.dataset,
        users.search,
        users.sort,
        users.descending,
        offset,
        users.page_size,  # type: ignore[arg-type]
    )
    users = replace(
        users, offset=offset, user_ids=tuple(row.user_id for row in page.rows), total=page.total
    )
    return users, users.cached(index)
