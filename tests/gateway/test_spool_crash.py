"""Crash safety: a writer process is SIGKILLed at random instants, 30 times, on the same spool.

The child reports ``P <id>`` only after ``put`` returned, ``a <id>`` before it calls ``ack`` and
``A <id>`` only after ``ack`` returned, through a pipe. After each kill the parent reopens the
spool and checks that every reported put with no ack started is present with its exact bytes,
that no reported ack came back, that opening raised no corruption error, and it counts the torn
tails it saw repaired.
Small segments and compaction thresholds make kills land in rolls and compactions too.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from gateway.spool import Spool
from tests.conftest import REPO_ROOT

KILLS = 30
DEADLINE_S = 120

CHILD = r"""
import hashlib, os, random, sys
from gateway.spool import Spool

def payload(i):
    n = 1000 + int.from_bytes(i[:2], "big") % 60000
    return hashlib.blake2b(i).digest() * (n // 64)

directory, seed = sys.argv[1], int(sys.argv[2])
rng = random.Random(seed)
spool = Spool(directory, 64 << 20, segment_bytes=256 << 10, compact_min_bytes=128 << 10)
live = [e.envelope_id for e in spool.pending()]
while True:
    if live and rng.random() < 0.4:
        i = live.pop(rng.randrange(len(live)))
        os.write(1, b"a " + i.hex().encode() + b"\n")  # intent: may be gone after a kill
        spool.ack(i)
        os.write(1, b"A " + i.hex().encode() + b"\n")
    else:
        i = rng.randbytes(16)
        spool.put(i, "peer:" + str(i[0] % 3), payload(i))
        os.write(1, b"P " + i.hex().encode() + b"\n")
        live.append(i)
"""


def payload(i: bytes) -> bytes:
    n = 1000 + int.from_bytes(i[:2], "big") % 60000
    return hashlib.blake2b(i).digest() * (n // 64)


def test_sigkill_at_random_points_loses_no_acknowledged_put(tmp_path: Path) -> None:
    rng = random.Random(20240601)
    directory = tmp_path / "spool"
    must_have: set[bytes] = set()
    acked: set[bytes] = set()
    torn_repairs = 0
    deadline = time.monotonic() + DEADLINE_S
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    for round_no in range(KILLS):
        assert time.monotonic() < deadline, f"crash test over its time limit at round {round_no}"
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(directory), str(round_no)],
            stdout=subprocess.PIPE,
            env=env,
        )
        assert child.stdout is not None
        # Wait for the first report so the kill lands mid-stream, then a random extra delay.
        first = child.stdout.readline()
        assert first, "child died before writing anything"
        time.sleep(rng.uniform(0.0, 0.15))
        child.send_signal(signal.SIGKILL)
        out = first + child.stdout.read()
        child.wait(timeout=10)
        assert child.returncode == -signal.SIGKILL
        for line in out.split(b"\n"):
            if len(line) != 34:  # a partial report: the child died while writing it
                continue
            kind, hexid = line.split(b" ")
            i = bytes.fromhex(hexid.decode())
            if kind == b"P":
                must_have.add(i)
            elif kind == b"a":
                must_have.discard(i)  # ack started: present or not, both are correct
            else:
                acked.add(i)

        with Spool(directory, 64 << 20) as spool:  # raises SpoolCorrupt on any mid-file damage
            if spool.recovery.torn_tail is not None:
                torn_repairs += 1
            present = {e.envelope_id: e for e in spool.pending()}
        missing = must_have - present.keys()
        assert not missing, f"round {round_no}: acknowledged puts lost: {len(missing)}"
        resurrected = acked & present.keys()
        assert not resurrected, f"round {round_no}: acked entries came back"
        for i in must_have:
            assert present[i].data == payload(i)
            assert present[i].destination == "peer:" + str(i[0] % 3)
        # Entries the child put but could not report are allowed, and the child acks them later.
    assert len(must_have) + len(acked) > KILLS  # the children did real work
    print(f"torn tails repaired: {torn_repairs}/{KILLS}; live {len(must_have)}, acked {len(acked)}")
