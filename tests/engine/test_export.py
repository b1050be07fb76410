"""detr_core.export and tools/export.py: torch.export and ONNX (onnxruntime) outputs equal PyTorch's within 1e-4."""
import pytest
import torch

from detr_core import export
from tests.variants import small

IMAGES = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(0)) * 255


def check(model, tmp_path, formats):
    results = export.export(model.eval(), IMAGES, str(tmp_path / "model"), formats, tolerance=1e-4)
    assert set(results) == set(formats) and all(diff <= 1e-4 for diff in results.values())
    # the reloaded program really is the model: a second input gives the model's outputs too
    other = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(1)) * 255
    with torch.no_grad():
        expected = export.ExportableDetector(model)(other)
        actual = torch.export.load(str(tmp_path / "model.pt2")).module()(other)
    assert export.max_difference(expected, actual) <= 1e-4
    return results


@pytest.mark.parametrize("variant", ["detr", "sam_detr"])
def test_torch_export_and_onnx_match_pytorch(variant, tmp_path):
    pytest.importorskip("onnxruntime", reason="the ONNX check needs the export extra (part of the test extra)")
    check(small(variant), tmp_path, ("torch", "onnx"))
    assert (tmp_path / "model.onnx").stat().st_size > 10_000


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["cond_detr", "dab_detr", "sam_detr_smca"])
def test_other_variants_export_to_both(variant, tmp_path):
    pytest.importorskip("onnxruntime", reason="the ONNX check needs the export extra (part of the test extra)")
    check(small(variant), tmp_path, ("torch", "onnx"))


@pytest.mark.parametrize("variant", ["smca_detr", "smca_detr_ms"])
def test_smca_exports_with_torch_export_and_names_the_onnx_limit(variant, tmp_path):
    model = small(variant)
    check(model, tmp_path, ("torch",))
    with pytest.raises(export.ExportError, match="SMCA-DETR cannot be exported to ONNX.*--format torch"):
        export.export(model, IMAGES, str(tmp_path / "m"), ("onnx",))
    assert not (tmp_path / "m.onnx").exists()


def test_a_difference_above_the_tolerance_fails(tmp_path, monkeypatch):
    model = small("detr").eval()
    monkeypatch.setattr(export, "max_difference", lambda expected, actual: 1.0)
    with pytest.raises(export.ExportError, match="differs from PyTorch by 1 > tolerance 0.0001"):
        export.export(model, IMAGES, str(tmp_path / "m"), ("torch",))


def test_command_line(tmp_path, capsys):
    from tools import export as export_tool

    export_tool.main(["--config-file", "configs/detr/detr_shapes.py", "--output", str(tmp_path / "detr"),
                 "--height", "64", "--width", "64", "--format", "torch", "--random-weights"])
    assert "max |difference| vs PyTorch" in capsys.readouterr().out and (tmp_path / "detr.pt2").exists()
