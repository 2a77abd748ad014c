"""PII masking on a corpus of true positives (must be masked) and look-alikes (must stay readable)."""

from __future__ import annotations

import pytest

from modelcycle.errors import ConfigError
from modelcycle.monitor.pii import Masker

TRUE_POSITIVES = [
    ("write to jane.doe+test@example.co.uk today", "write to [EMAIL] today", "email"),
    ("card 4111 1111 1111 1111 expires soon", "card [CARD] expires soon", "card"),
    ("paid with 5500-0000-0000-0004.", "paid with [CARD].", "card"),
    ("amex 378282246310005", "amex [CARD]", "card"),
    ("IBAN DE89 3704 0044 0532 0130 00 please", "IBAN [IBAN] please", "iban"),
    ("to GB82WEST12345698765432", "to [IBAN]", "iban"),
    ("from 192.168.10.254 at noon", "from [IP] at noon", "ip"),
    ("v6 host 2001:db8::8a2e:370:7334 down", "v6 host [IP] down", "ip"),
    ("身份证 11010519491231002X 已验证", "身份证 [CN_ID] 已验证", "cn_id"),
    ("call +44 20 7946 0958 now", "call [PHONE] now", "phone"),
    ("call (650) 253-0000 after 5", "call [PHONE] after 5", "phone"),
    ("ring +86 138 0013 8000", "ring [PHONE]", "phone"),
]

LOOK_ALIKES = [
    "order 4111 1111 1111 1112 shipped",  # fails Luhn
    "tracking 1234567890123",  # 13 digits, fails Luhn
    "IBAN DE89 3704 0044 0532 0130 01 is a typo",  # fails mod 97
    "version 1.2.3.4000 and 999.1.1.1",  # not IP addresses
    "id 110105194912310021 is not valid",  # wrong check digit
    "id 110105194913310028 has month 13",
    "the meeting is at 10:30 on 2024-05-17",
    "user at example dot com",
    "price 1,234,567.89 USD",
    "room 42, floor 3",
]


@pytest.mark.parametrize(("text", "masked", "rule"), TRUE_POSITIVES)
def test_personal_data_is_masked(text: str, masked: str, rule: str) -> None:
    masker = Masker()
    assert masker.mask_text(text) == masked
    assert masker.counts[rule] == 1


@pytest.mark.parametrize("text", LOOK_ALIKES)
def test_look_alikes_stay_readable(text: str) -> None:
    masker = Masker()
    assert masker.mask_text(text) == text
    assert sum(masker.counts.values()) == 0


def test_json_values_fields_rules_and_own_patterns() -> None:
    record = {"note": "mail a@b.io", "email": "c@d.io", "rows": [{"note": "ip 10.0.0.1"}], "age": 41}
    assert Masker().mask(record) == {
        "note": "mail [EMAIL]",
        "email": "[EMAIL]",
        "rows": [{"note": "ip [IP]"}],
        "age": 41,
    }
    only_email_field = Masker(fields=["email"]).mask(record)
    assert only_email_field["note"] == "mail a@b.io"
    assert only_email_field["email"] == "[EMAIL]"
    assert Masker(rules=["ip"]).mask_text("a@b.io 10.0.0.1") == "a@b.io [IP]"
    own = Masker(rules=[], patterns={"ticket": r"TCK-\d{6}"})
    assert own.mask_text("see TCK-123456") == "see [TICKET]"


def test_unknown_rules_and_bad_patterns_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown rule"):
        Masker(rules=["email", "passport"])
    with pytest.raises(ConfigError, match=r"monitor\.pii\.patterns\.bad"):
        Masker(patterns={"bad": "("})
