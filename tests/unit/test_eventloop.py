"""The event loop choice: uvloop unless DMULOG_EVENT_LOOP says asyncio."""

from __future__ import annotations

import asyncio

import pytest

from dmulog import eventloop


def test_uvloop_is_the_default_and_asyncio_can_be_chosen() -> None:
    """Unset or empty means uvloop; anything but the two names is refused, naming the variable."""
    assert "uvloop" == eventloop.name({})
    assert "uvloop" == eventloop.name({eventloop.ENV: ""})
    assert "asyncio" == eventloop.name({eventloop.ENV: "asyncio"})
    with pytest.raises(ValueError, match=eventloop.ENV):
        eventloop.name({eventloop.ENV: "trio"})


@pytest.mark.parametrize("kind", ["uvloop", "asyncio"])
def test_run_uses_the_chosen_loop(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """run() gives the coroutine's result, on the loop that was asked for."""
    monkeypatch.setenv(eventloop.ENV, kind)

    async def which() -> str:
        await asyncio.sleep(0)
        return eventloop.current()

    assert kind == eventloop.run(which())
