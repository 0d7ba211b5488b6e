"""The ACL of logsvc/redis_acl.py against what the code sends, and against what the docs show.

The integration tests (tests/integration/test_redis_security.py) run logsvc
as that user and find nothing refused; these read the sources, so that a
command added to a Lua library or to the store without its grant fails here
first, with its name.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from logsvc.redis_acl import (
    ACL_COMMANDS,
    CLIENT_COMMANDS,
    CLUSTER_COMMANDS,
    FUNCTION_COMMANDS,
    SINCE_7_2,
    key_pattern,
    setuser_line,
)

ROOT = Path(__file__).resolve().parents[2]
LOGSVC = ROOT / "logsvc"

NOT_GRANTED = {"config|get"}
"""Sent, and refused on purpose (logsvc/redis_acl.py says why; the caller takes the refusal)."""

METHODS = {"function_load": "function|load", "scan_iter": "scan", "getrange": "getrange", "hscan": "hscan",
           "smembers": "smembers", "xadd": "xadd", "xrevrange": "xrevrange", "xread": "xread"}  # fmt: skip
"""redis-py client methods logsvc calls, and the command each sends."""
NOT_COMMANDS = {"aclose", "pipeline", "execute_command"}


def lua_commands(source: str) -> set[str]:
    """The commands a Lua library calls (``redis.call('X', ...)`` or ``redis.pcall``), lower case."""
    found = set(re.findall(r"redis\.p?call\(\s*['\"]([A-Za-z_]+)['\"]", source))
    assert not re.search(r"redis\.p?call\(\s*[^'\"\s]", source), "a command name that is not a literal: grant by hand"
    return {c.lower() for c in found}


def python_commands(source: str) -> set[str]:
    """The commands Python code sends: literal command words, and the redis-py methods of :data:`METHODS`.

    Raises:
        AssertionError: a redis-py method this test does not know (add it to METHODS with its command).
    """
    found = set()
    for words in re.findall(r"(?:execute_command|_keyless|on_one_primary|on_each_primary|on_node\(node,)\(?\s*"
                            r"\"([A-Z_]+(?: [A-Z]+)?)\"", source):  # fmt: skip
        found.add(words.lower().replace(" ", "|"))
    found.update(w.lower() for w in re.findall(r"\"(FCALL(?:_RO)?)\"", source))
    for method in re.findall(r"(?:self\._redis|store\.redis)\.(\w+)\(", source):
        if method in NOT_COMMANDS:
            continue
        assert method in METHODS, f"redis-py method {method}: which command does it send?"
        found.add(METHODS[method])
    return found


def test_every_command_a_function_calls_is_granted() -> None:
    """A Function runs with the caller's ACL: each command of lua/*.lua must be in FUNCTION_COMMANDS, and no more."""
    called = set().union(*(lua_commands(p.read_text()) for p in (LOGSVC / "lua").glob("*.lua")))
    assert called == set(FUNCTION_COMMANDS)


def test_every_command_logsvc_sends_is_granted() -> None:
    """What logsvc's Python sends outside Functions is granted, CONFIG GET aside."""
    sent = set().union(*(python_commands(p.read_text()) for p in LOGSVC.glob("*.py")))
    assert {"fcall", "fcall_ro", "function|load", "time", "wait", "waitaof", "scan", "xread"} <= sent
    assert sent - set(CLIENT_COMMANDS) - set(CLUSTER_COMMANDS) == NOT_GRANTED


def test_the_checks_name_a_command_left_out() -> None:
    """The two checks above on a broken input: a new command in a library, a new redis-py call."""
    library = "redis.call('HSET', k, f, v)\nredis.pcall('EXPIRE', k, 10)"
    assert lua_commands(library) - set(FUNCTION_COMMANDS) == {"expire"}
    assert python_commands('await self._keyless("MEMORY USAGE", key)') == {"memory|usage"}
    with pytest.raises(AssertionError, match="method keys"):
        python_commands("await self._redis.keys('*')")


def test_the_line_grants_each_command_once_and_nothing_else() -> None:
    """``reset`` first, one key pattern, no channel, then ``-@all`` and each command once."""
    words = setuser_line(password="pw").split()
    assert words[:8] == ["ACL", "SETUSER", "dmulog", "reset", "on", ">pw", "~dmulog:*", "resetchannels"]
    assert words[8] == "-@all"
    grants = words[9:]
    assert grants == ["+" + c for c in ACL_COMMANDS] and len(set(grants)) == len(grants)
    assert not any(w.startswith(("+@", "~", "%", "&", "allkeys", "allcommands")) for w in grants)


def test_the_redis_7_0_line_leaves_out_only_what_7_0_lacks() -> None:
    """Redis 7.0 refuses the whole line for one command it does not know."""
    full, old = setuser_line().split(), setuser_line(redis_7_0=True).split()
    assert set(full) - set(old) == {"+" + c for c in SINCE_7_2} and set(old) <= set(full)


@pytest.mark.parametrize(("prefix", "pattern"), [("dmulog", "~dmulog:*"), ("team-a:dm", "~team-a:dm:*"),
                                                 ("a*b", "~a\\*b:*"), ("x[1]?", "~x\\[1\\]\\?:*")])  # fmt: skip
def test_the_key_pattern_is_the_prefix_and_nothing_wider(prefix: str, pattern: str) -> None:
    """Glob characters of a prefix are escaped: ``a*b`` must not grant ``abc:...``."""
    assert key_pattern(prefix) == pattern


def test_the_docs_show_the_rendered_lines() -> None:
    """Every ``ACL SETUSER`` line of README.md and docs/ is one that setuser_line renders, and both are shown."""
    rendered = {setuser_line(), setuser_line(redis_7_0=True)}
    shown = set()
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        for line in path.read_text().splitlines():
            if line.lstrip().startswith("ACL SETUSER"):
                assert line.strip() in rendered, f"{path.relative_to(ROOT)}: {line.strip()!r} is not rendered"
                shown.add(line.strip())
    assert shown == rendered, f"not in the docs: {rendered - shown}"
