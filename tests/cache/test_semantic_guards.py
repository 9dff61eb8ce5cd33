"""Unit tests for the near-miss guards, one block per rule: what must be a miss, and the
paraphrase-like variations the same rule must let through."""

from __future__ import annotations

import pytest

from tollway.cache.semantic.guards import RULES, features, near_miss


def rule(query: str, candidate: str) -> str | None:
    reason = near_miss(query, candidate)
    assert reason == near_miss(candidate, query) or (reason is None) == (
        near_miss(candidate, query) is None
    ), "guards must be symmetric"
    return None if reason is None else reason.split(":", 1)[0]


MISSES = [
    # numbers: digits, decimals, words, ordinals, scales, units, dates, signs
    ("number", "Summarise this in 3 sentences.", "Summarise this in 10 sentences."),
    ("number", "Give me 5 ideas.", "Give me ten ideas."),
    ("number", "Upgrade to Python 3.12", "Upgrade to Python 3.11"),
    ("number", "Show the first row", "Show the second row"),
    ("number", "Show the 1st row", "Show the 3rd row"),
    ("number", "twenty-five apples", "twenty-six apples"),
    ("number", "It is -5 degrees outside", "It is 5 degrees outside"),
    ("number", "Meeting on 2024-03-05", "Meeting on 2024-05-03"),
    ("number", "Set a timer for 10 minutes", "Set a timer for 10 seconds"),
    ("number", "Summarise in 3 paragraphs", "Summarise in 3 sentences"),
    ("number", "Summarise in 3 short paragraphs", "Summarise in 3 short sentences"),
    ("number", "My plan has 5 GB of data", "My plan has 5 MB of data"),
    ("number", "100 MB per second", "100 Mb per second"),
    ("number", "Remind me at 3pm", "Remind me at 3am"),
    ("number", "Apply a 10% discount", "Apply a 10 dollar discount"),
    ("number", "Is 40 °C hot?", "Is 40 °F hot?"),
    ("number", "Transfer $500 to savings", "Transfer €500 to savings"),
    ("operator", "What is 7 + 5?", "What is 7 * 5?"),
    # quotes and code
    ("quote", 'What does "ephemeral" mean?', 'What does "ubiquitous" mean?'),
    ("quote", "Translate 'good night' to French", "Translate 'good morning' to French"),
    ("quote", "Find \u201cconfig.yaml\u201d", "Find \u201cconfig.json\u201d"),
    ("quote", 'Replace "foo" with "bar"', 'Replace "bar" with "foo"'),
    ("code", "What does `git reset --hard` do?", "What does `git reset --soft` do?"),
    ("code", "Fix this:\n```py\nx = 1\n```", "Fix this:\n```py\nx = 2\n```"),
    ("script", "What does 你好 mean?", "What does 再见 mean?"),
    # negation and antonyms, with inflections
    ("negation", "Why does my code compile?", "Why doesn't my code compile?"),
    ("negation", "I can log in", "I cannot log in"),
    ("negation", "Users with an email", "Users without an email"),
    ("negation", "I was able to pay", "I was unable to pay"),
    ("antonym", "How do I enable 2FA?", "How do I disable 2FA?"),
    ("antonym", "Enabling 2FA", "Disabled 2FA"),
    ("antonym", "How to include hidden files", "How to exclude hidden files"),
    ("antonym", "Add a user to the group", "Remove a user from the group"),
    ("antonym", "Increase the volume", "Decrease the volume"),
    ("antonym", "Allow cookies", "Deny cookies"),
    ("antonym", "Cancel before shipping", "Cancel after shipping"),
    ("antonym", "What is the max size?", "What is the min size?"),
    ("antonym", "Import contacts", "Export contacts"),
    ("antonym", "Encrypt the disk", "Decrypt the disk"),
    ("antonym", "Upload a file", "Download a file"),
    ("antonym", "Start the server", "Stopped the server"),
    ("antonym", "Open the port", "Close the port"),
    ("antonym", "Lock the door", "Unlock the door"),
    ("antonym", "Show hidden files", "Hide files"),
    ("antonym", "Should I buy shares?", "Should I sell shares?"),
    ("antonym", "Accept the invite", "Reject the invite"),
    ("antonym", "Turn on dark mode", "Turn off dark mode"),
    ("antonym", "Scale up the cluster", "Scale down the cluster"),
    ("antonym", "How do I log in?", "How do I log out?"),
    ("antonym", "Set the flag to true", "Set the flag to false"),
    ("antonym", "Sort ascending", "Sort descending"),
    ("antonym", "Book flights to Paris", "Book flights from Paris"),
    # languages, names, identifiers, time words, order
    ("language", "Translate it to Spanish", "Translate it to German"),
    ("language", "Write it in Python", "Write it in Rust"),
    ("language", "Write it in python", "Write it in rust"),
    ("language", "Write it in Go", "Write it in Java"),
    ("language", "Write it in C++", "Write it in C#"),
    ("entity", "What is the capital of France?", "What is the capital of Germany?"),
    ("entity", "Deploy it to AWS", "Deploy it to GCP"),
    ("entity", "Is this legal in the US?", "Is this legal for us?"),
    ("entity", "Compare the iPhone and the iPad", "Compare the iPhone and the Pixel"),
    ("entity", "Mr. Smith called", "Mr. Jones called"),
    ("identifier", "What does user_id store?", "What does user_name store?"),
    ("identifier", "Why is main.py missing?", "Why is app.py missing?"),
    ("time", "Schedule it for tomorrow", "Schedule it for today"),
    ("time", "Sales last week", "Sales this week"),
    ("time", "Forecast for Monday", "Forecast for Tuesday"),
    ("order", "From London to Paris by train", "From Paris to London by train"),
    ("order", "Is Python faster than Java?", "Is Java faster than Python?"),
    ("order", "translate from english to spanish", "translate from spanish to english"),
    # content words: one swapped, or a qualifier added
    ("substitution", "A recipe for chicken soup, please", "A recipe for beef soup, please"),
    ("substitution", "Is it safe to take ibuprofen?", "Is it safe to take aspirin?"),
    ("qualifier", "How do I delete my account?", "How do I delete my business account?"),
]

PASSES = [
    ("Summarise this in three sentences.", "Give me a 3-sentence summary of this."),
    ("What is 15% of 200?", "What's 15 percent of 200?"),
    ("5 million dollars", "$5,000,000"),
    ("Show the first row", "Show the 1st row"),
    ("twenty-five apples and one hundred and five pears", "25 apples and 105 pears"),
    ("wait one second", "wait 1 second"),
    ("Give me 5 ideas for a party", "Suggest 5 party ideas"),
    ("What does HTTP 404 mean?", "What is the meaning of an HTTP 404 error?"),
    ("Translate \u2018good night\u2019 to French", "Translate 'good night' to French"),
    ("I can't log in", "I cannot log in"),
    ("I don't have access", "I have no access"),
    ("How do I enable 2FA?", "How can I activate 2FA?"),
    ("Why was 2FA enabled?", "Who enabled 2FA?"),
    ("How do I connect to Postgres from Python?", "How can I connect to Postgres using Python?"),
    ("What is the capital of France?", "what's the capital of france"),
    ("Paris weather today?", "What's the weather in Paris today?"),
    ("How do I fix a leaking faucet?", "How can I repair a leaky faucet?"),
    ("How do I update my billing address?", "How can I change my billing address?"),
    ("Tell me a joke about programmers.", "Tell me a programmer joke."),
    ("How do I delete my account?", "How can I delete my account permanently?"),
    ("Don't use 'rm -rf' here", "Don't use 'rm -rf' here!"),
    ("The users' settings", "The settings of the users"),
]


@pytest.mark.parametrize(("expected", "query", "candidate"), MISSES)
def test_near_misses_are_rejected_by_the_right_rule(
    expected: str, query: str, candidate: str
) -> None:
    assert expected in RULES
    assert rule(query, candidate) == expected


@pytest.mark.parametrize(("query", "candidate"), PASSES)
def test_equivalent_phrasings_pass(query: str, candidate: str) -> None:
    assert near_miss(query, candidate) is None


def test_every_rule_is_exercised() -> None:
    assert {expected for expected, _, _ in MISSES} == set(RULES)


def test_identical_and_empty_texts_pass() -> None:
    assert near_miss("", "") is None
    assert near_miss("same text 42", "same text 42") is None


def test_reason_names_the_difference() -> None:
    assert near_miss("Summarise in 3 sentences", "Summarise in 10 sentences") == (
        "number: ['3 sentence'] vs ['10 sentence']"
    )
    assert near_miss("How do I enable 2FA?", "How do I disable 2FA?") == "antonym: enable/disable"


def test_features_are_memoised_and_long_texts_are_not() -> None:
    short = "How do I reset my password?"
    assert features(short) is features(short)
    long = "word " * 2000
    assert features(long) is not features(long)
    assert features(long) == features(long)


def test_numbers_features() -> None:
    assert features("3 sentences, three sentences, 1,200 requests").numbers == (
        "1200",
        "3 sentence",
        "3 sentence",
    )
    assert features("the 21st and twenty-first").numbers == ("#21", "#21")
    assert features("a dozen eggs and half a day").numbers == ("0.5", "12")
