"""The dashboard listens for exactly the event types the service emits."""

from __future__ import annotations

import re

from service.events import EVENT_TYPES
from tests.conftest import ROOT

LIVE_JS = ROOT / "service" / "static" / "js" / "live.js"


def test_the_dashboard_knows_every_event_type() -> None:
    # EventSource delivers a named event only to a listener registered for that name, so
    # a type missing here would silently never refresh the page.
    block = re.search(r"const TYPES = \[(.*?)\];", LIVE_JS.read_text(), re.S)
    assert block is not None
    listened = re.findall(r'"([a-z_.]+)"', block.group(1))
    assert sorted(listened) == sorted(EVENT_TYPES)
