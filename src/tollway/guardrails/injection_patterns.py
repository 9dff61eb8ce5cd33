"""The injection heuristics' patterns, each with the words it cannot match without.

Python's re tries a pattern at every position (~40 us a KB each); a substring test is a
hundred times cheaper, so a pattern runs only on text that has one of its (lowercase) gate
words. The gaps between a pattern's words allow line breaks: tool results arrive wrapped
(YAML, e-mail bodies) in the middle of a sentence.

Written against the attacks of the tune half of bench/guardrails_eval.py's corpora
(AgentDojo, BIPIA, spikee) and the OWASP LLM01 write-ups, as classes of wording rather than
copies of one template; the test half is reported, never tuned on.
"""

from __future__ import annotations

import re

_I = re.IGNORECASE
_GAP = r"[^.!?]{0,40}?"  # words between, within a sentence, across line breaks
_PAST = r"(?:previous|prior|above|earlier|preceding|initial|original|old|former)"
_RULES = (r"(?:instructions?|prompts?|rules|directions|directives?|guidelines|"
          r"guardrails|context|messages?|constraints|programming|requests?|commands?|orders|"
          r"tasks?)")
_ANSWER = r"(?:response|reply|answer|output|message|summary)"

PATTERNS: list[tuple[str, tuple[str, ...], re.Pattern[str]]] = [
    # ignore / forget / override what came before
    ("instruction_override", ("ignore", "disregard", "forget", "override", "bypass", "skip",
                              "drop", "abandon", "cancel"), re.compile(
        r"\b(?:ignore|disregard|forget|override|bypass|skip|drop|abandon|cancel)\b" + _GAP
        + r"\b(?:" + _PAST[3:-1] + r"|all|any|your|the|these|those|system|developer)\b"
        + r"[^.!?]{0,30}?\b" + _RULES + r"\b", _I)),
    ("instruction_override", ("ignore", "disregard", "forget", "abandon"), re.compile(
        r"\b(?:ignore|disregard|forget|abandon)\s+(?:all\s+|any\s+)?(?:of\s+)?(?:your|the|my|"
        r"these)?\s*" + _PAST + r"\b", _I)),
    ("instruction_override", ("regardless", "instead of", "rather than"), re.compile(
        r"\b(?:regardless of|instead of|rather than)\s+(?:your|the|any|all)\s+(?:" + _PAST[3:-1]
        + r"\s+)?" + _RULES + r"\b", _I)),
    # announced replacement instructions
    ("instruction_override", ("instruction", "directive", "orders", "command", "task"),
     re.compile(
        r"\b(?:new|updated|revised|real|actual|true|hidden|secret|additional|important|urgent)"
        r"\s+(?:important\s+|urgent\s+)?(?:system\s+)?(?:instructions?|directives?|orders|"
        r"commands?|task)\b\s*(?::|-{1,2}|\*|!|follow|start|below|are|is|come)", _I)),
    ("instruction_override", ("task", "job", "goal", "mission", "objective"), re.compile(
        r"\byour\s+(?:new\s+|real\s+|actual\s+|only\s+|next\s+|true\s+)?(?:task|job|goal|"
        r"mission|objective)\s+(?:is|will be|now is)\s+(?:now\s+)?(?:to\b|:)", _I)),
    # text posing as another turn or as the system
    ("role_injection", ("system", "assistant", "developer", "admin"), re.compile(
        r"(?:^|\n)\s*(?:#{1,4}\s*)?\(?\s*(?:system|assistant|developer|admin)[ _]?(?:prompt|"
        r"message|instructions?|note)?\s*\)?\s*:\s*\S|#{2,4}\s*\(\s*(?:system|admin|developer)"
        r"[ _]?(?:message|prompt|instructions?)?\s*\)", _I)),
    ("role_injection", ("<|", "[inst", "[/inst", "[sys", "[/sys", "<<sys", "<</sys",
                        "<system", "</system", "<instruction", "</instruction"), re.compile(
        r"<\|?\s*(?:im_start|im_end|system|endoftext|eot_id|start_header_id)\s*\|?>|"
        r"\[/?(?:INST|SYS)\]|<</?SYS>>|</?(?:system|instructions?)>", _I)),
    # orders aimed at the model
    ("addressed_to_assistant", ("you are", "from now on", "act as", "pretend", " mode"),
     re.compile(
        r"\b(?:you are now|from now on,? you|act as (?:an?|the) (?:unrestricted|unfiltered|"
        r"jailbroken|different)|pretend (?:to be|you are)|enter (?:developer|dan|god) mode|"
        r"developer mode (?:enabled|on)|you are (?:now )?(?:operating|running) in \w+ mode|"
        r"you are (?:now )?(?:an? )?(?:no[- ]limits?|unrestricted|unfiltered|uncensored|"
        r"jailbroken) (?:ai|assistant|model))\b", _I)),
    ("addressed_to_assistant", ("assistant", "chatbot", "language model", "llm", "agent",
                                "gpt", "claude", "model", "ai"), re.compile(
        r"\b(?:AI|assistant|chatbot|language model|LLM|agent|GPT(?:-\d\w*)?|Claude|model)\b[,:]?"
        r"\s+(?:you\s+)?(?:must|should|shall|need to|have to|are (?:required|instructed) to)\s+"
        r"(?:now\s+)?(?:ignore|send|forward|email|reveal|print|output|include|call|run|execute|"
        r"delete|transfer|say|respond|reply|tell)\b", _I)),
    ("addressed_to_assistant", ("to you",), re.compile(
        r"\b(?:message|note|request|instructions?)\b[^.!?]{0,60}\bto you,?\s+(?:the\s+)?(?:AI|"
        r"assistant|language model|LLM|agent|GPT(?:-\d\w*)?|Claude|model|chatbot)\b", _I)),
    ("addressed_to_assistant", ("before you", "task i gave", "task that i gave"), re.compile(
        r"\bbefore (?:you )?(?:can )?(?:solve|complete|finish|continue|answer|start|proceed "
        r"with|do|work on)\s+(?:the|your|this|my)\s+(?:task|request|question|job)|"
        r"\bthe task (?:that )?I gave you\b", _I)),
    ("addressed_to_assistant", ("do not", "don't", "never"), re.compile(
        r"\b(?:do not|don't|never)\s+(?:tell|inform|mention|reveal|show|alert|notify)\b"
        r"[^.!?]{0,30}\b(?:the user|the human|anyone|the customer|them)\b", _I)),
    ("addressed_to_assistant", ("without asking", "without telling", "without informing",
                                "without notifying", "without confirming"), re.compile(
        r"\bwithout (?:asking|telling|informing|notifying|confirming with)\s+(?:me|the user|"
        r"anyone|them|the human)\b", _I)),
    ("addressed_to_assistant", ("system prompt", "initial", "hidden", "instructions above"),
     re.compile(
        r"\b(?:reveal|print|output|repeat|show|leak|dump)\b[^.!?]{0,25}\b(?:your|the)\s+"
        r"(?:system\s+prompt|initial\s+instructions|hidden\s+instructions|instructions above)",
        _I)),
    # the answer rewritten to someone else's ends
    ("answer_manipulation", ("response", "reply", "answer", "output", "summary"), re.compile(
        r"(?:^|[.!?:]\s+|\n\s*)(?:please\s+)?(?:include|insert|add|integrate|put|append|prepend|"
        r"write|encode|translate|provide|replace|modify|rewrite|format|end|start|begin|mention|"
        r"promote|respond)\b[^.!?]{0,80}?\b(?:in|into|to|within|of)\s+(?:your|the|each|every)\s+"
        + _ANSWER + r"s?\b|(?:^|[.!?:]\s+|\n\s*)(?:please\s+)?(?:encode|translate|provide|"
        r"modify|rewrite|format|reverse)\s+your\s+" + _ANSWER + r"\b", _I)),
    # calls the attacker wants made
    ("tool_hijack", ("tool", "function"), re.compile(
        r"\b(?:use|call|invoke|run|execute|trigger)\s+the\s+(?:tool|function)\s+`?[\w./-]+`?"
        r"\s+with\s+(?:the\s+)?(?:following\s+)?(?:arguments|parameters|args|inputs?)\b", _I)),
    # data sent out
    ("exfiltration", ("http", "@", "www."), re.compile(
        r"\b(?:send|forward|e-?mail|post|upload|transmit|exfiltrate|leak|copy|share)\b"
        r"[^.!?]{0,80}?\b(?:to|at|into|on)\s+(?:the\s+)?(?:website\s+|site\s+|url\s+|page\s+|"
        r"address\s+)?(?:https?://|www\.|[\w.+-]+@[\w-]+\.[\w.]+)", _I)),
    ("exfiltration", ("http", "www."), re.compile(
        r"\b(?:send|share|post|forward)\s+(?:a\s+|the\s+|this\s+)?link\s+(?:to\s+)?"
        r"(?:https?://|www\.)", _I)),
    # markup that runs when the answer is rendered
    ("active_content", ("onerror", "onload", "javascript:"), re.compile(
        r"<(?:img|svg|iframe|body|video|audio)\b[^>]{0,200}?\bon(?:error|load)\s*=|"
        r"href\s*=\s*[\"']?\s*javascript:", _I)),
]
