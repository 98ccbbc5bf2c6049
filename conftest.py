"""Test-session setup: one XLA compilation cache for the whole run, shared by the xdist workers.

Most of the suite's time is XLA compiling small programs, and many are compiled more than
once: every ``fit`` jits a fresh training step, whose program is often the same as one
another test (or the other worker) already compiled. JAX's persistent cache, keyed by the
program and the compiler's version and flags, turns those repeats into disk reads. The
directory lives for one run only (CI and every local run start cold), so no result can
depend on an earlier run. ``BAYES_SNN_TEST_JAX_CACHE=0`` turns it off.
"""

import os
import shutil
import tempfile

import jax

_DIR = "BAYES_SNN_TEST_JAX_CACHE_DIR"  # set by the controlling process, inherited by the workers


def pytest_configure(config):
    if os.environ.get("BAYES_SNN_TEST_JAX_CACHE") == "0":
        return
    if _DIR not in os.environ:  # the controller (or a run without xdist): make the run's cache
        os.environ[_DIR] = tempfile.mkdtemp(prefix="bayes-snn-jax-cache-")
        config._bayes_snn_cache_owner = True
    jax.config.update("jax_compilation_cache_dir", os.environ[_DIR])
    # Cache every program: the repeats are small networks' steps of 0.2-3 s each.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def pytest_unconfigure(config):
    if getattr(config, "_bayes_snn_cache_owner", False):
        shutil.rmtree(os.environ.pop(_DIR), ignore_errors=True)
