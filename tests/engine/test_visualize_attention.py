"""detr_core.visualize and tools/visualize_attention.py: one PNG per variant; the boxes it draws are the
model's, in image pixels."""
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.ops import box_convert, clip_boxes_to_image

from detr_core import visualize as vis
from tests.conftest import random_image
from tests.variants import VARIANTS, tiny
from tools import visualize_attention

HEIGHT, WIDTH, QUERIES = 64, 96, 2

@pytest.mark.parametrize("variant", [v.name for v in VARIANTS])
def test_one_png_per_variant_with_boxes_inside_the_image(variant, tmp_path):
    model = tiny(variant).eval()
    image = random_image(HEIGHT, WIDTH).permute(1, 2, 0).numpy().astype(np.uint8)
    output = tmp_path / f"{variant}.png"
    drawn = vis.visualize(model, image, str(output), QUERIES)

    assert Image.open(output).format == "PNG" and output.stat().st_size > 2000
    assert drawn.shape[-1] == 4 and len(drawn) >= QUERIES
    assert (drawn[:, 0::2] >= 0).all() and (drawn[:, 0::2] <= WIDTH).all()
    assert (drawn[:, 1::2] >= 0).all() and (drawn[:, 1::2] <= HEIGHT).all()
    assert (drawn[:, 2:] >= drawn[:, :2]).all()
    # The first rows are the final boxes of the best queries, scaled by the image (not the padded) size.
    out = vis.decoder_outputs(model, image)
    queries, _, _ = vis.best_queries(model, out["pred_logits"][0], QUERIES)
    scale = torch.tensor([WIDTH, HEIGHT, WIDTH, HEIGHT])
    expected = box_convert(out["pred_boxes"][0, queries] * scale, "cxcywh", "xyxy")
    torch.testing.assert_close(drawn[:QUERIES], clip_boxes_to_image(expected, (HEIGHT, WIDTH)), atol=1e-3, rtol=1e-4)


def test_intermediate_boxes_are_drawn_for_dab_and_sam(tmp_path):
    image = random_image(HEIGHT, WIDTH).permute(1, 2, 0).numpy().astype(np.uint8)
    dab = tiny("dab_detr").eval()
    layers = len(dab.transformer.decoder.layers)
    drawn = vis.visualize(dab, image, str(tmp_path / "dab.png"), QUERIES)
    assert len(drawn) == QUERIES * (1 + layers)  # final boxes + one anchor per layer and query
    sam = tiny("sam_detr").eval()
    drawn = vis.visualize(sam, image, str(tmp_path / "sam.png"), QUERIES)
    assert len(drawn) == QUERIES * (1 + len(sam.transformer.decoder.layers))  # final + reference boxes


def test_unsupported_model_is_named(tmp_path):
    class Other(torch.nn.Module):
        pass

    with pytest.raises(ValueError, match="Other has no attention figure"):
        vis.visualize(Other(), np.zeros((8, 8, 3), np.uint8), str(tmp_path / "x.png"))


def test_command_line_on_an_image_file(tmp_path):
    image = random_image(80, 120).permute(1, 2, 0).numpy().astype(np.uint8)
    Image.fromarray(image).save(tmp_path / "in.png")
    output = tmp_path / "cond.png"
    visualize_attention.main(
        ["--config-file", "configs/cond_detr/cond_detr_shapes.py", "--image", str(tmp_path / "in.png"),
         "--output", str(output), "--queries", "2", "--random-weights"]
    )
    assert output.stat().st_size > 2000
    with pytest.raises(FileNotFoundError, match="missing.png"):
        visualize_attention.main(["--config-file", "configs/cond_detr/cond_detr_shapes.py",
                                  "--image", str(tmp_path / "missing.png"), "--random-weights"])


@pytest.mark.parametrize("variant, figure", [("cond_detr", "attention_figure"), ("smca_detr", "gaussian_figure")])
def test_every_heat_map_has_a_colour_bar(variant, figure):
    model = tiny(variant).eval()
    image = random_image(HEIGHT, WIDTH).permute(1, 2, 0).numpy().astype(np.uint8)
    fig, _ = getattr(vis, figure)(model, image, vis.decoder_outputs(model, image), QUERIES)
    heat_panels = [ax for ax in fig.axes if len(ax.images) == 2]  # the picture and a map over it
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert heat_panels and len(bars) == len(heat_panels)
    assert all(bar.get_ylabel() for bar in bars)  # each says what its colours measure
    vis._plt().close(fig)
