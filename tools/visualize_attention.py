#!/usr/bin/env python
"""Draw what each paper changes in the decoder, for the best-scoring queries of one image.

    python tools/visualize_attention.py --config-file configs/dab_detr/dab_detr_shapes.py \\
        --weights output/dab_detr_shapes/model_final.pth --dataset shapes_val --index 3 \\
        --output projects/DAB-DETR/attention.png
    python tools/visualize_attention.py --config-file configs/cond_detr/cond_detr_r50_50ep.py \\
        --weights cond_detr_r50.pth --image photo.jpg --queries 3 --output cond.png

One PNG per call, for any variant (``detr_core.visualize``): DETR's cross-attention per layer; Conditional
DETR's reference point and the spatial attention of the conditional spatial query (paper Fig. 1);
DAB-DETR's anchor box per layer and its width/height-modulated positional attention; SMCA-DETR's Gaussian
priors and co-attention; SAM-DETR's reference boxes and salient points per layer. Every map comes from the
model's ``forward_images(images, need_weights=True)``, not from hooks.
"""
import argparse
import os
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, help="a LazyConfig of any variant")
    parser.add_argument("--weights", default="", help="checkpoint of that config's model")
    parser.add_argument("--random-weights", action="store_true", help="draw a randomly initialised model on purpose")
    parser.add_argument("--dataset", default=None, help="dataset to take the image from (default: the config's test set)")
    parser.add_argument("--index", type=int, default=0, help="image index in --dataset")
    parser.add_argument("--image", default="", help="an image file instead of a dataset image")
    parser.add_argument("--queries", type=int, default=3, help="how many of the best-scoring queries to draw")
    parser.add_argument("--output", default="attention.png", help="PNG file to write")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="LazyConfig overrides, key=value")
    args = parser.parse_args(argv)
    if not args.weights and not args.random_weights:
        parser.error("no weights: pass --weights <checkpoint of the config's model> (or --random-weights)")
    if args.image and os.path.realpath(args.image) == os.path.realpath(args.output):
        parser.error(f"--output {args.output} would overwrite --image {args.image}; choose another --output")

    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.data import transforms as T
    from detectron2.data.detection_utils import read_image

    from detr_core.visualize import visualize
    from detr_core.predictor import Predictor

    predictor = Predictor(args.config_file, args.weights, args.device, args.opts, allow_random_init=args.random_weights)
    dataset = args.dataset or predictor.dataset_name
    if args.image:
        if not os.path.isfile(args.image):
            raise FileNotFoundError(f"--image not found: {args.image}")
        path = args.image
    else:
        records = DatasetCatalog.get(dataset)
        if not 0 <= args.index < len(records):
            raise IndexError(f"--index {args.index} is outside dataset {dataset!r} ({len(records)} images)")
        path = records[args.index]["file_name"]
    image = read_image(path, format="RGB")
    aug_input = T.AugInput(image)
    T.AugmentationList(predictor.augmentations)(aug_input)
    names = MetadataCatalog.get(dataset).get("thing_classes", None)
    visualize(predictor.model, aug_input.image, args.output, args.queries, names)
    print(f"wrote {args.output} ({type(predictor.model).__name__}, {path})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
