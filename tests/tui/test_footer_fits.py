"""Every screen's footer fits its keys in the 120 columns the snapshots use: a key that
overflows is hidden (the footer scrolls sideways), and on the generation screen that hid
ctrl+x Cancel, ctrl+q Quit and ? Help."""

from __future__ import annotations

from textual.widgets import Footer
from textual.widgets._footer import FooterKey

from lampbox.tui import create_app
from lampbox.tui.generation import PaneChoice

SIZE = (120, 36)


def overflowing_keys(screen) -> list[str]:  # type: ignore[no-untyped-def]
    """The footer's keys that do not show in full left of the command palette's key."""
    footer = screen.query_one(Footer)
    keys = [key for key in footer.query(FooterKey) if not key.has_class("-command-palette")]
    assert keys, f"{type(screen).__name__}: no keys in the footer"
    palette = footer.query_one(".-command-palette", FooterKey)
    return [
        f"{key.key_display} {key.description}"
        for key in keys
        if key.region.width == 0 or key.region.right > palette.region.x
    ]


async def test_every_screen_footer_fits_at_120_columns(bench_store, settle) -> None:  # type: ignore[no-untyped-def]
    app = create_app(store=bench_store, max_new_tokens=4)
    app.pane_choices = [PaneChoice("none", 0, "dummy"), PaneChoice("bm25", 2, "dummy")]
    seen: dict[str, list[str]] = {}

    async def look() -> None:
        app.screen.refresh_bindings()
        await settle(pilot)
        seen[type(app.screen).__name__] = overflowing_keys(app.screen)

    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await look()
        for key in ("enter", "enter", "g"):  # user, question, generations
            await pilot.press(key)
            await settle(pilot)
            await look()
        await pilot.press("escape", "escape", "escape")
        await settle(pilot)
        for presses in (("b",), ("down", "enter"), ("enter",)):  # runs, per-user gains, failures
            await pilot.press(*presses)
            await settle(pilot)
            await look()
    assert set(seen) == {
        "UsersScreen",
        "UserScreen",
        "QuestionScreen",
        "GenerationScreen",
        "RunsScreen",
        "RunUsersScreen",
        "FailuresScreen",
    }
    assert seen == {name: [] for name in seen}


async def test_the_question_text_keeps_room_at_60_by_20(bench_store, settle) -> None:  # type: ignore[no-untyped-def]
    """Issue 23, found 8: at 60x20 the profile table (66 columns wide) took the whole width
    and the question's text had none."""
    from textual.widgets import Static

    from lampbox.tui.screens.question import QuestionScreen

    app = create_app(store=bench_store)
    async with app.run_test(size=(60, 20)) as pilot:
        await settle(pilot)
        await pilot.press("enter", "enter")  # the first user, their first question
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, QuestionScreen) and screen.question is not None
        text = screen.query_one("#question-input", Static)
        assert text.region.width >= 20 and text.region.height >= 1  # on screen, wide enough to read
        assert str(text.render()).startswith("Question")
