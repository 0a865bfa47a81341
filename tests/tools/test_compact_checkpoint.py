"""tools/compact_checkpoint.py: float16 weights, half the bytes, loaded back as float32 by every reader."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from conftest import tiny_info
from tool_module import load_tool

torch = pytest.importorskip("torch")

from unetrt.export.checkpoint import build_model, load_checkpoint, load_model, save_checkpoint  # noqa: E402


def test_compact_checkpoint_halves_the_weights_and_loads_as_float32(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(0)
    info = tiny_info()
    model = build_model(info).eval()
    optimizer = torch.optim.Adam(model.parameters())
    source, compact = tmp_path / "last.pt", tmp_path / "compact.pt"
    save_checkpoint(source, model, info, optimizer=optimizer.state_dict(), epoch=3)
    weights_only = tmp_path / "weights.pt"
    save_checkpoint(weights_only, model, info)
    assert load_tool("compact_checkpoint").main([str(source), str(compact)]) == 0
    assert "compact.pt" in capsys.readouterr().out
    stored = load_checkpoint(compact)
    assert "optimizer" not in stored and stored["weights_stored_as"] == "float16"
    assert all(t.dtype == torch.float16 for t in stored["model"].values() if t.is_floating_point())
    assert compact.stat().st_size < 0.75 * weights_only.stat().st_size
    loaded, loaded_info = load_model(compact)
    assert loaded_info == info
    for name, tensor in loaded.state_dict().items():
        original = model.state_dict()[name]
        assert tensor.dtype == original.dtype
        if tensor.is_floating_point():
            torch.testing.assert_close(tensor, original.half().float(), atol=0, rtol=0)
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), atol=1e-2, rtol=1e-2)


def test_a_file_that_is_not_a_checkpoint_exits_2_with_one_line(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert load_tool("compact_checkpoint").main([str(bad), str(tmp_path / "out.pt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert not (tmp_path / "out.pt").exists()


def test_the_line_printed_gives_the_new_size_and_the_source_size(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    # Base 32: weights of a few MiB, so the two sizes differ at the line's 0.1 MiB resolution.
    info = replace(tiny_info(), base=32)
    source, compact = tmp_path / "best.pt", tmp_path / "compact.pt"
    save_checkpoint(source, build_model(info), info)
    assert load_tool("compact_checkpoint").main([str(source), str(compact)]) == 0
    new, old = (f"{path.stat().st_size / 2**20:.1f}" for path in (compact, source))
    assert new != old
    assert capsys.readouterr().out == f"{compact}: {new} MiB (from {old})\n"
