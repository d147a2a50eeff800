"""LaMP tasks (and custom LaMP-format tasks) declared as data.

A TaskSpec says everything the engine needs about a task: its kind and labels, its official
metrics, how to recognise its inputs, how to extract the retrieval query, which profile fields
make a document, and how IPA renders a retrieved item. Custom tasks are declared by a
`task.json` file next to their data (see docs/tasks.md) and behave like the built-in ones.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from lampbox.errors import InputFileError, LampboxError, UnknownNameError

TaskKind = Literal["classification", "rating", "generation"]

METRICS_BY_KIND: dict[str, tuple[str, ...]] = {
    "classification": ("accuracy", "f1"),
    "rating": ("mae", "rmse"),
    "generation": ("rouge-1", "rouge-L"),
}
LOWER_IS_BETTER = frozenset({"mae", "rmse"})
KIND_ALIASES = {"regression": "rating", "ordinal": "rating"}

SPLIT_SCHEMES = ("user", "time")
SETS = ("train", "dev", "test")

MOVIE_TAGS = (
    "sci-fi", "based on a book", "comedy", "action", "twist ending", "dystopia", "dark comedy",
    "classic", "psychology", "fantasy", "romance", "thought-provoking", "social commentary",
    "violence", "true story",
)  # fmt: skip
NEWS_CATEGORIES = (
    "food & drink", "sports", "education", "parents", "religion", "travel", "business", "crime",
    "science & technology", "culture & arts", "entertainment", "politics", "women",
    "style & beauty", "healthy living",
)  # fmt: skip

# How the retrieved items are joined to the input in IPA: items, then this, then the input.
IPA_DEFAULT_CONNECTOR = ". "
IPA_PATTERNS_CONNECTOR = ". Following the given patterns "
IPA_WRITTEN_BY_CONNECTOR = " are written by a person. Following the given patterns "


@dataclass(frozen=True)
class TaskSpec:
    """One task: LaMP_1..LaMP_7 or a custom task with the shape of one of them."""

    name: str
    kind: TaskKind
    input_prefix: str
    query_after: str | None  # None: LaMP_1's quoted candidate titles
    profile_fields: tuple[str, ...]
    document: tuple[str, ...]
    ipa_item_template: str
    ipa_truncate_field: str
    ipa_connector: str = IPA_DEFAULT_CONNECTOR
    ipa_splice_after_title: bool = False  # LaMP_1: items go after the word "title" of the input
    labels: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    like: str = ""
    description: str = ""
    target_field: str | None = None  # the field a retrieval-only baseline copies (or votes on)
    file_task: str = ""  # the "task" value in official outputs files
    url_path: str | None = None  # folder under the LaMP download root; None: not downloadable
    time_url_path: str | None = None
    default_split: str = "user"
    custom: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)
    # How a profile item becomes an (input, target) training pair in the task's own format
    # (OPPU's per-user data): templates over the item's fields ({labels}: the task's labels,
    # comma-separated); an empty input is plain language modelling of the target. None:
    # derived (`profile_templates`).
    profile_input: str | None = None
    profile_target: str | None = None

    def __post_init__(self) -> None:
        if not self.metrics:
            object.__setattr__(self, "metrics", METRICS_BY_KIND[self.kind])
        if not self.file_task:
            object.__setattr__(self, "file_task", self.name)
        if not self.like:
            object.__setattr__(self, "like", self.name)

    @property
    def main_metric(self) -> str:
        return self.metrics[0]

    def higher_is_better(self, metric: str | None = None) -> bool:
        return (metric or self.main_metric) not in LOWER_IS_BETTER

    def query(self, input_text: str) -> str:
        """The retrieval query for an input, as the official rank_profiles extracts it.

        If the marker is missing, the official code would fail; lampbox uses the whole input.
        """
        if self.query_after is None:
            quoted = extract_strings_between_quotes(input_text)
            if len(quoted) >= 3:
                return f"{quoted[1]} {quoted[2]}"
            return input_text.strip()
        index = input_text.find(self.query_after)
        if index == -1:
            return input_text.strip()
        return input_text[index + len(self.query_after) :].strip()

    def question_text(self, input_text: str) -> str:
        """The question's own text, without the task's instruction (what lists show).

        The input after the instruction, as the retrieval query is cut; for LaMP_1, whose
        query is only the candidate titles, the paper's title and both candidates.
        """
        if self.query_after is None:
            quoted = extract_strings_between_quotes(input_text)
            if len(quoted) >= 3:
                return f'"{quoted[0]}": [1] "{quoted[1]}" [2] "{quoted[2]}"'
            return input_text.strip()
        return self.query(input_text)

    def document_text(self, fields: Mapping[str, Any], date: str | None = None) -> str:
        """The text a retriever sees for a profile item (date appended with use_date)."""
        text = " ".join(str(fields.get(name, "")) for name in self.document)
        if date is not None:
            text = f"{text} date: {date}"
        return text

    def profile_templates(self) -> tuple[str, str]:
        """(input, target) templates for a profile item: the declared ones, else derived. The
        target is the item's target field (or its first document field). The input is plain
        language modelling ("") for a generation task shaped like one whose items are modelled
        plainly (LaMP_1, LaMP_4, LaMP_7), otherwise the task's input prefix followed by the
        item's main text (`ipa_truncate_field`)."""
        target = self.profile_target
        if target is None:
            target = "{" + (self.target_field or self.document[0]) + "}"
        if self.profile_input is not None:
            return self.profile_input, target
        like = BUILTIN_TASKS.get(self.like) if self.like != self.name else None
        if self.kind == "generation" and like is not None and like.profile_input == "":
            return "", target
        return self._item_input_template(), target

    def _item_input_template(self) -> str:
        """The task's input prefix followed by a profile item's main text (as a template)."""
        prefix = self.input_prefix.replace("{", "{{").replace("}", "}}")
        separator = "" if not prefix or prefix[-1].isspace() else " "
        return prefix + separator + "{" + self.ipa_truncate_field + "}"

    def question_templates(self) -> tuple[str, str] | None:
        """(input, target) templates that make a profile item one of the task's own questions
        (a task adapter's `--profile-pairs`): the profile pair's when it has an input; for a task
        whose items are modelled as plain text, the input prefix with the item's main text asking
        for its target field (LaMP_4: the article -> its headline). None when an item makes no
        question: no target field, or the target is the main text itself (LaMP_1, LaMP_7)."""
        input_template, target_template = self.profile_templates()
        if input_template:
            return input_template, target_template
        if self.target_field is None or self.target_field == self.ipa_truncate_field:
            return None
        return self._item_input_template(), target_template

    def question_pair(self, fields: Mapping[str, Any]) -> tuple[str, str]:
        """A profile item as one of the task's (input, target) questions (`question_templates`)."""
        templates = self.question_templates()
        if templates is None:
            raise LampboxError(f"{self.name}: a profile item makes no question of the task (its target is the item's own text)")
        return self._format_pair(templates, fields)

    def profile_pair(self, fields: Mapping[str, Any]) -> tuple[str, str]:
        """A profile item (its fields) as an (input, target) training pair; input "" means plain
        language modelling of the target."""
        return self._format_pair(self.profile_templates(), fields)

    def _format_pair(self, templates: tuple[str, str], fields: Mapping[str, Any]) -> tuple[str, str]:
        input_template, target_template = templates
        values = {**{name: str(value) for name, value in fields.items()}, "labels": ", ".join(self.labels)}
        try:
            return input_template.format_map(values), target_template.format_map(values)
        except KeyError as error:
            raise LampboxError(f"{self.name}: a profile item has no field {error} (its fields: {', '.join(fields)})") from None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["extra"] = dict(self.extra)
        for key in ("profile_input", "profile_target"):  # left out when derived: older fingerprints stay
            if data[key] is None:
                del data[key]
        return data

    @classmethod
    def from_stored(cls, data: Mapping[str, Any]) -> TaskSpec:
        values = dict(data)
        for key in ("profile_fields", "document", "labels", "metrics"):
            values[key] = tuple(values.get(key) or ())
        return cls(**values)


def extract_strings_between_quotes(text: str) -> list[str]:
    """The strings between pairs of double quotes, in order (official LaMP helper)."""
    found: list[str] = []
    inside = False
    current: list[str] = []
    for char in text:
        if char == '"':
            if inside:
                found.append("".join(current))
                current = []
            inside = not inside
        elif inside:
            current.append(char)
    return found


BUILTIN_TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec(
            name="LaMP_1",
            description="Personalized citation identification (binary choice between two references)",
            kind="classification",
            labels=("[1]", "[2]"),
            input_prefix="For an author who has written the paper with the title",
            query_after=None,
            profile_fields=("title", "abstract"),
            document=("title", "abstract"),
            ipa_item_template='"{title}"',
            ipa_truncate_field="title",
            ipa_connector="",
            ipa_splice_after_title=True,
            target_field=None,
            profile_input="",  # the author's own titles, modelled as text
            profile_target="{title}",
            url_path="LaMP_1",
            time_url_path="time/LaMP_1",
        ),
        TaskSpec(
            name="LaMP_2",
            description="Personalized movie tagging (15 tags; the current LaMP_2)",
            kind="classification",
            labels=MOVIE_TAGS,
            input_prefix="Which tag does this movie relate to among the following tags?",
            query_after="description:",
            profile_fields=("description", "tag"),
            document=("description",),
            ipa_item_template='the tag for the movie: "{description}" is "{tag}" ',
            ipa_truncate_field="description",
            target_field="tag",
            profile_input=(
                "Which tag does this movie relate to among the following tags? Just answer with the tag name "
                "without further explanation. tags: [{labels}] description: {description}"
            ),
            profile_target="{tag}",
            url_path="LaMP_2/new",
            time_url_path="time/LaMP_2/new",
        ),
        TaskSpec(
            name="LaMP_2N",
            description="Personalized news categorization (15 categories; the original LaMP_2, used by OPPU)",
            kind="classification",
            labels=NEWS_CATEGORIES,
            input_prefix="Which category does this article relate to among the following categories?",
            query_after="article:",
            profile_fields=("title", "text", "category"),
            document=("title", "text"),
            ipa_item_template='the category for the article: "{text}" is "{category}" ',
            ipa_truncate_field="text",
            target_field="category",
            profile_input=(
                "Which category does this article relate to among the following categories? Just answer with the "
                "category name without further explanation. categories: [{labels}] article: {text}"
            ),
            profile_target="{category}",
            file_task="LaMP_2",
            url_path=None,  # no longer served by the LaMP site: import a copy
        ),
        TaskSpec(
            name="LaMP_3",
            description="Personalized product rating (1 to 5 stars)",
            kind="rating",
            labels=("1", "2", "3", "4", "5"),
            input_prefix="What is the score of the following review on a scale of 1 to 5?",
            query_after="review:",
            profile_fields=("text", "score"),
            document=("text",),
            ipa_item_template='{score} is the score for "{text}" ',
            ipa_truncate_field="text",
            target_field="score",
            profile_input=(
                "What is the score of the following review on a scale of 1 to 5? just answer with 1, 2, 3, 4, or 5 "
                "without further explanation. review: {text}"
            ),
            profile_target="{score}",
            url_path="LaMP_3",
            time_url_path="time/LaMP_3",
        ),
        TaskSpec(
            name="LaMP_4",
            description="Personalized news headline generation",
            kind="generation",
            input_prefix="Generate a headline for the following article:",
            query_after="article:",
            profile_fields=("title", "text"),
            document=("title", "text"),
            ipa_item_template='"{title}" is the title for "{text}" ',
            ipa_truncate_field="text",
            target_field="title",
            profile_input="",  # the user's headlines, modelled as text
            profile_target="{title}",
            url_path="LaMP_4",
            time_url_path="time/LaMP_4",
        ),
        TaskSpec(
            name="LaMP_5",
            description="Personalized scholarly title generation",
            kind="generation",
            input_prefix="Generate a title for the following abstract of a paper:",
            query_after=":",
            profile_fields=("title", "abstract"),
            document=("title", "abstract"),
            ipa_item_template='"{title}" is a title for "{abstract}" ',
            ipa_truncate_field="abstract",
            ipa_connector=IPA_PATTERNS_CONNECTOR,
            target_field="title",
            profile_input="Generate a title for the following abstract of a paper: {abstract}",
            profile_target="{title}",
            url_path="LaMP_5",
            time_url_path="time/LaMP_5",
        ),
        TaskSpec(
            name="LaMP_6",
            description="Personalized email subject generation (Avocado corpus; build it with `lampbox data build-lamp6`)",
            kind="generation",
            input_prefix="Generate a subject for the following email:",
            query_after=":",
            profile_fields=("title", "text"),
            document=("text",),
            ipa_item_template='"{title}" is the title for "{text}" ',
            ipa_truncate_field="text",
            target_field="title",
            profile_input="Generate a subject for the following email: {text}",
            profile_target="{title}",
            url_path=None,  # not public: built from a licensed Avocado copy
        ),
        TaskSpec(
            name="LaMP_7",
            description="Personalized tweet paraphrasing",
            kind="generation",
            input_prefix="Paraphrase the following tweet without any explanation before or after it:",
            query_after=":",
            profile_fields=("text",),
            document=("text",),
            ipa_item_template='"{text}" ',
            ipa_truncate_field="text",
            ipa_connector=IPA_WRITTEN_BY_CONNECTOR,
            target_field="text",
            profile_input="",  # the user's tweets, modelled as text
            profile_target="{text}",
            url_path="LaMP_7",
            time_url_path="time/LaMP_7",
        ),
    )
}


def builtin_task(name: str) -> TaskSpec:
    """A built-in LaMP task by name (also accepts LaMP-7 / lamp_7 spellings)."""
    canonical = name.replace("-", "_")
    for known in BUILTIN_TASKS:
        if known.lower() == canonical.lower():
            return BUILTIN_TASKS[known]
    raise UnknownNameError("task", name, list(BUILTIN_TASKS))


def detect_task(input_text: str, candidates: list[TaskSpec] | None = None) -> TaskSpec | None:
    """The task whose input prefix starts this input (longest prefix wins), if any."""
    specs = candidates if candidates is not None else list(BUILTIN_TASKS.values())
    matches = [spec for spec in specs if spec.input_prefix and input_text.startswith(spec.input_prefix)]
    if not matches:
        return None
    return max(matches, key=lambda spec: len(spec.input_prefix))


_REQUIRED_KEYS = ("name", "kind", "input_prefix", "document", "ipa_item_template")


def load_task_json(path: str | Path) -> TaskSpec:
    """Read a custom task declaration (task.json); errors name the file and the problem."""
    from lampbox.lampfiles import json_error_problem

    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise InputFileError(path, f"not UTF-8 text ({error.reason} at byte {error.start})") from None
    except json.JSONDecodeError as error:
        raise InputFileError(path, json_error_problem(error)) from None
    except OSError as error:
        raise InputFileError(path, f"cannot read: {error.strerror}") from None
    if not isinstance(data, dict):
        raise InputFileError(path, "a task declaration must be a JSON object")
    return task_from_declaration(data, source=path)


def task_from_declaration(data: Mapping[str, Any], source: str | Path = "task.json") -> TaskSpec:
    """Build a custom TaskSpec from a task.json object (validated)."""
    missing = [key for key in _REQUIRED_KEYS if key not in data]
    if missing:
        raise InputFileError(source, f"missing key(s): {', '.join(missing)}")
    name = str(data["name"])
    if not name or any(char in name for char in "/\\ \t\n"):
        raise InputFileError(source, f"task name {name!r} must be non-empty with no spaces or slashes")
    if name.replace("-", "_").lower() in {known.lower() for known in BUILTIN_TASKS}:
        raise InputFileError(source, f"task name {name!r} is a built-in LaMP task; choose another name")
    kind = KIND_ALIASES.get(str(data["kind"]), str(data["kind"]))
    if kind not in METRICS_BY_KIND:
        raise InputFileError(source, f"kind {data['kind']!r} is not one of {', '.join(METRICS_BY_KIND)}")
    like_name = str(data.get("like", ""))
    like = None
    if like_name:
        try:
            like = builtin_task(like_name)
        except UnknownNameError as error:
            raise InputFileError(source, str(error)) from None
    labels = _labels(data.get("labels", ()), source)
    if kind == "classification" and not labels:
        raise InputFileError(source, "a classification task needs its labels")
    metrics = tuple(str(metric) for metric in data.get("metrics", ())) or METRICS_BY_KIND[kind]
    unknown_metrics = [metric for metric in metrics if metric not in METRICS_BY_KIND[kind]]
    if unknown_metrics:
        raise InputFileError(
            source,
            f"metric(s) {', '.join(unknown_metrics)} do not fit a {kind} task "
            f"(use {', '.join(METRICS_BY_KIND[kind])})",
        )
    document = _string_tuple(data["document"], "document", source)
    profile_fields = _string_tuple(data.get("profile_fields", document), "profile_fields", source)
    template = str(data["ipa_item_template"])
    template_fields = _template_fields(template)
    known_fields = set(profile_fields) | set(document)
    unknown_fields = [name for name in template_fields if name not in known_fields]
    if unknown_fields:
        raise InputFileError(source, f"ipa_item_template uses unknown field(s): {', '.join(unknown_fields)}")
    truncate = data.get("ipa_truncate_field") or _default_truncate_field(template_fields, document)
    target = data.get("target_field") or _default_target_field(like, profile_fields, document)
    connector = data.get("ipa_connector", like.ipa_connector if like else IPA_DEFAULT_CONNECTOR)
    split = str(data.get("split", "user"))
    if split not in SPLIT_SCHEMES:
        raise InputFileError(source, f"split {split!r} is not one of {', '.join(SPLIT_SCHEMES)}")
    profile_templates = {key: data.get(key) for key in ("profile_input", "profile_target")}
    for key, value in profile_templates.items():
        if value is None:
            continue
        if not isinstance(value, str):
            raise InputFileError(source, f"{key} must be a string (a template over the profile fields)")
        unknown = [name for name in _template_fields(value) if name not in known_fields | {"labels"}]
        if unknown:
            raise InputFileError(source, f"{key} uses unknown field(s): {', '.join(unknown)}")
    known_keys = set(_REQUIRED_KEYS) | {
        "like", "description", "labels", "metrics", "query_after", "profile_fields",
        "ipa_truncate_field", "target_field", "ipa_connector", "split", "profile_input", "profile_target",
    }  # fmt: skip
    return TaskSpec(
        name=name,
        kind=kind,  # type: ignore[arg-type]
        input_prefix=str(data["input_prefix"]),
        query_after=str(data.get("query_after", ":")),
        profile_fields=profile_fields,
        document=document,
        ipa_item_template=template,
        ipa_truncate_field=str(truncate),
        ipa_connector=str(connector),
        labels=labels,
        metrics=metrics,
        like=like.name if like else name,
        description=str(data.get("description", "")),
        target_field=str(target) if target else None,
        default_split=split,
        custom=True,
        extra={key: value for key, value in data.items() if key not in known_keys},
        profile_input=profile_templates["profile_input"],
        profile_target=profile_templates["profile_target"],
    )


def _labels(value: Any, source: str | Path) -> tuple[str, ...]:
    """Labels are a list of unique, non-empty strings (golds are compared with them stripped)."""
    if not isinstance(value, (list, tuple)):
        raise InputFileError(source, f"labels must be a list of strings, not {json.dumps(value)[:60]}")
    seen: set[str] = set()
    for index, label in enumerate(value):
        if not isinstance(label, str):
            raise InputFileError(source, f"label #{index} is {json.dumps(label)[:60]}, not a string (quote it)")
        if not label.strip():
            raise InputFileError(source, f"label #{index} is empty")
        if label != label.strip():
            raise InputFileError(source, f"label {label!r} has spaces around it (golds are compared stripped)")
        if label in seen:
            raise InputFileError(source, f"label {label!r} appears twice")
        seen.add(label)
    return tuple(value)


def _string_tuple(value: Any, key: str, source: str | Path) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(item, str) for item in value):
        raise InputFileError(source, f"{key} must be a non-empty list of field names")
    return tuple(value)


def _template_fields(template: str) -> list[str]:
    import string

    return [name for _, name, _, _ in string.Formatter().parse(template) if name]


def _default_truncate_field(template_fields: list[str], document: tuple[str, ...]) -> str:
    in_document = [name for name in template_fields if name in document]
    if in_document:
        return in_document[-1]
    return template_fields[-1] if template_fields else document[-1]


def _default_target_field(
    like: TaskSpec | None, profile_fields: tuple[str, ...], document: tuple[str, ...]
) -> str | None:
    if like and like.target_field in profile_fields:
        return like.target_field
    extras = [name for name in profile_fields if name not in document and name != "date"]
    return extras[0] if extras else None
