"""``serve`` is ready only once warm: the model computes one street scene of each prepared size before ``/readyz``
says ready, so the first client does not pay the runtime's first inference (benchmarks/serve_first_request.py
measures the latency it saves)."""
from __future__ import annotations

import logging

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'pix2pixhd-deploy[serve]')")

from serve_helpers import SIZE, make_data  # noqa: E402


def test_the_model_is_warm_before_the_state_is_ready(tmp_path, caplog, monkeypatch):
    from pix2pixhd_deploy.runners.open import Model, ModelOptions
    from pix2pixhd_deploy.serve.options import ServeLimits
    from pix2pixhd_deploy.serve.state import ServeState

    checkpoint, _ = make_data(tmp_path, count=1)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    seen = []
    real = Model.compute

    def counting(self, labels, insts):
        seen.append((labels.shape, state.model is None))  # computed while the state was not yet ready
        return real(self, labels, insts)

    monkeypatch.setattr(Model, "compute", counting)
    state = ServeState(ModelOptions(model=str(checkpoint), sizes=(SIZE,)), ServeLimits())
    with caplog.at_level(logging.INFO, logger="pix2pixhd_deploy.serve.state"):
        state.load()
    try:
        assert seen == [((1, *SIZE), True)]
        assert state.model is not None
        assert any(f"serve: warmed up ({SIZE[1]}x{SIZE[0]} in" in r.getMessage() for r in caplog.records)
    finally:
        state.close()
