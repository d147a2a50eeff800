"""The help screen (`?`): what each screen shows and its keys."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

HELP_TEXT = """\
# lampbox

Browse a LaMP store user by user. Every screen lists its main keys in the footer;
**ctrl+p** opens the command palette, **?** this help, **ctrl+q** quits.

## Every table
`E` on a table (users, questions, profiles, rankings, runs, per-user gains, failure
cases, a prompt's items) exports all of its rows (every page, real column names, numbers as
numbers) to CSV, Parquet or JSON: choose the format and the file (a new file in the
current directory by default) and lampbox says where it wrote.

## Users
Pick a dataset (task · split scheme · set) on the left, then a user.

| key | does |
| --- | --- |
| `/` | search user ids |
| `s` / `r` | sort by id, questions, profile items / reverse |
| `]` / `[` | next / previous page |
| `enter` | open the user |
| `b` | bench runs and failure cases |

## User
The user's questions (top: each one's own text, without the task's instruction) and
profile items (bottom).

| key | does |
| --- | --- |
| `p` | the highlighted question's whole input (instruction included) |
| `]` / `[` | next / previous user of the list |
| `/` | search the profile |
| `s` / `r` | sort the profile by date, id or a field / reverse |
| `enter` | open the highlighted question |
| `escape` | back |

## Question
Question text, gold and profile; below, the rankings of several retrievers side by side.
Items retrieved by more than one retriever are marked with how many rankings hold them.

| key | does |
| --- | --- |
| `p` | the whole input (the task's instruction included) |
| `space` | toggle a retriever (in the retriever list) |
| `+` / `-` | more / fewer retrieved items (k) |
| `g` | generate side by side (with the what-if edits, beside the original) |
| `x` | exclude the highlighted item (profile or ranking) from the prompts; again: back |
| `P` | pin the highlighted item: prompts take pinned items first; again: unpin |
| `e` | edit the question's input (the gold stays) |
| `n` | a new question as this user (no gold) |
| `u` | undo every what-if edit |
| `ctrl+x` | cancel the ranking in progress |
| `escape` | back |

## Generations
One pane per choice of retriever, k, backend and model (at first: no personalization and
each chosen retriever at k on the TUI's default model, the model manifest's
`interactive`), built, generated, cached and scored by
the same pipeline as `lampbox bench`. Cached outputs show at once; others stream in. Panes
on different models run at the same time; panes on one model are one batch on hf and one
after another on llama.cpp. Changed panes are kept for later questions until you quit.
When an RSPG selector scored the question, each pane shows its choice's probability, the
selector's pick is marked ★ and the oracle's pick (the best stored answer) ◆, and a list
under the panes gives every candidate's probability, stored answer and score; when ROPG feedback exists, the rankings show each
item's utility (`util`).

On a prompt (or a whole input, `p`): `c` copies it to the clipboard (through the terminal,
OSC 52: not every terminal passes it on), `w` saves it to a file.

| key | does |
| --- | --- |
| `m` | choose the focused pane's model (manifest or trained), backend, retriever and k |
| `a` / `d` | add a pane / remove the focused pane |
| `R` | back to the question's retrievers on the TUI's default model |
| `p` | the exact prompt of the focused pane, with the items that went in |
| `c` | copy the focused pane's prompt to the clipboard |
| `tab` | next pane |
| `g` | generate again (cached outputs come back at once) |
| `s` | save a what-if (each finished pane: a small run, under Runs: What-ifs) |
| `ctrl+x` | cancel the generation |

## Runs
The benches in the store (`lampbox bench`) and a bench's configurations with the change
of the main metric against no personalization and the paired p-value. `enter` on a
configuration: its users sorted by gain, the biggest losers first (`r` flips), and a plot
of gain against profile size. Gains are signed so that a loss is always worse (MAE too).
`h` there: the users by history size instead, in the buckets of `lampbox report --analysis
peft-vs-rag` (quantiles of the mean profile size), each with its users, the mean score of
the configuration and of the reference, the mean gain and the relative gain, and all users
(`h` again: back to the users). On an OPPU bench (rows for none, RAG, PEFT and PEFT + RAG)
`h` shows that report's analysis itself: each role's mean and its gain over none.
`enter` on a user: the questions where the configuration did worse, with prompt, retrieved
items, output, baseline output and gold (`a`: all the user's questions). Saved what-ifs
are listed apart ("What-ifs"), never mixed with the benches; `enter` shows one.

## Getting data
`lampbox data demo`, `lampbox data import PATH`, `lampbox data fetch LaMP_7`
(then `lampbox` again); `lampbox bench --task LaMP_7` for runs.
"""


class HelpScreen(ModalScreen[None]):
    """Keys and screens; closed with Escape, q or ?."""

    BINDINGS = [
        Binding("escape", "dismiss", "Close"),
        Binding("q", "dismiss", "Close", show=False),
        Binding("question_mark", "dismiss", "Close", show=False, key_display="?"),
    ]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box"):
            yield Markdown(HELP_TEXT, id="help-text")

    async def action_dismiss(self, result: None = None) -> None:
        self.dismiss(result)
