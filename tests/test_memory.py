"""snnvae.memory: glibc malloc tuning, opt-in, with an environment opt-out.

Each case runs in a fresh interpreter: the setting is process-wide and cannot be undone.
"""
import os
import platform
import subprocess
import sys

import pytest

GLIBC = platform.libc_ver()[0] == "glibc"

SCRIPT = """
import ctypes, numpy as np
from snnvae.memory import retain_freed_memory
first = retain_freed_memory()
second = retain_freed_memory()
a = np.ones(50_000_000 // 8); del a      # a large array freed, allocated again: still works
b = np.ones(50_000_000 // 8)
print(first, second, float(b.sum()) == b.size)
"""


def run(env_extra):
    env = {k: v for k, v in os.environ.items() if k != "SNNVAE_RELEASE_MEMORY"}
    env.update(env_extra)
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                         text=True, check=True)
    return out.stdout.split()


@pytest.mark.skipif(not GLIBC, reason="mallopt tuning exists on glibc only")
def test_retain_freed_memory_takes_effect_on_glibc():
    assert run({}) == ["True", "True", "True"]


def test_release_memory_environment_variable_opts_out():
    assert run({"SNNVAE_RELEASE_MEMORY": "1"}) == ["False", "False", "True"]


@pytest.mark.skipif(GLIBC, reason="checks the non-glibc fallback")
def test_retain_freed_memory_is_a_no_op_without_glibc():
    assert run({}) == ["False", "False", "True"]
