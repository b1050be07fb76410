#!/usr/bin/env python
"""Draw the detections of an evaluation (``inference/coco_instances_results.json``) next to the ground truth.

    python train_net.py --config-file configs/detr/detr_shapes.py --eval-only \\
        train.init_checkpoint=output/detr_shapes/model_final.pth train.output_dir=output/detr_shapes_eval
    python tools/visualize_json_results.py --config-file configs/detr/detr_shapes.py \\
        --input output/detr_shapes_eval/inference/coco_instances_results.json --output output/vis
    python tools/visualize_json_results.py --input results.json --dataset coco_2017_val --output vis --conf-threshold 0.3

Like detectron2's tool of the same name: one PNG per image of the dataset, the predictions scoring at least
``--conf-threshold`` on the left and the dataset's annotations on the right, drawn with detectron2's
Visualizer. The dataset is ``--dataset`` or the config's test set (``dataloader.test.dataset.names``); giving
``--config-file`` also registers datasets that the config registers. Category ids in the json are the
dataset's own (COCOEvaluator writes them so) and are mapped back to the model's classes.
"""
import argparse
import json
import os
import sys


def read_results(path: str) -> list:
    """The list of detections in a COCOEvaluator json, each with image_id, category_id, bbox and score."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--input not found: {path}")
    with open(path) as f:
        try:
            results = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not a json file ({e})") from None
    if not isinstance(results, list):
        raise ValueError(f"{path}: expected a list of detections (inference/coco_instances_results.json), got a {type(results).__name__}")
    for i, r in enumerate(results):
        missing = [k for k in ("image_id", "category_id", "bbox", "score") if not isinstance(r, dict) or k not in r]
        if missing:
            raise ValueError(f"{path}: detection {i} has no {', '.join(missing)}")
    return results


def predictions_by_image(results: list, path: str, records: dict, metadata):
    """image_id -> detectron2 Instances (boxes XYXY in pixels, scores, contiguous classes)."""
    import torch
    from detectron2.structures import Boxes, BoxMode, Instances

    to_contiguous = metadata.get("thing_dataset_id_to_contiguous_id", None)
    num_classes = len(metadata.get("thing_classes", []) or [])
    grouped = {}
    for i, r in enumerate(results):
        if r["image_id"] not in records:
            raise KeyError(f"{path}: detection {i} is for image_id={r['image_id']!r}, which the dataset does not have "
                           "(results of another dataset?)")
        category = to_contiguous.get(r["category_id"]) if to_contiguous else r["category_id"]
        if category is None or (num_classes and not 0 <= category < num_classes):
            raise KeyError(f"{path}: detection {i} has category_id={r['category_id']!r}, not a category of the dataset")
        grouped.setdefault(r["image_id"], []).append((r["bbox"], r["score"], category))
    out = {}
    for image_id, dets in grouped.items():
        record = records[image_id]
        inst = Instances((record["height"], record["width"]))
        boxes = torch.tensor([d[0] for d in dets], dtype=torch.float32).reshape(-1, 4)
        inst.pred_boxes = Boxes(BoxMode.convert(boxes, BoxMode.XYWH_ABS, BoxMode.XYXY_ABS))
        inst.scores = torch.tensor([d[1] for d in dets], dtype=torch.float32)
        inst.pred_classes = torch.tensor([d[2] for d in dets], dtype=torch.int64)
        out[image_id] = inst
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help="inference/coco_instances_results.json of an evaluation")
    parser.add_argument("--output", required=True, help="folder for the drawings")
    parser.add_argument("--config-file", default="", metavar="FILE", help="the evaluated config (its test set)")
    parser.add_argument("--dataset", default="", help="registered dataset name (default: the config's test set)")
    parser.add_argument("--conf-threshold", type=float, default=0.5, help="draw predictions scoring at least this")
    args = parser.parse_args(argv)
    if not (args.config_file or args.dataset):
        parser.error("give --config-file (its test set is drawn) or --dataset")
    if not 0.0 <= args.conf_threshold <= 1.0:
        parser.error(f"--conf-threshold {args.conf_threshold}: expected a score in [0, 1]")

    import numpy as np
    from detectron2.config import LazyConfig
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.data.detection_utils import read_image
    from detectron2.utils.visualizer import Visualizer
    from PIL import Image
    from tqdm import tqdm

    from detr_core.runtime import import_variants
    from detr_core.visualize import drawing_paths

    import_variants()
    dataset = args.dataset
    if args.config_file:
        if not os.path.isfile(args.config_file):
            raise FileNotFoundError(f"config file not found: {args.config_file}")
        names = LazyConfig.load(args.config_file).dataloader.test.dataset.names  # loading registers its datasets
        dataset = dataset or (names if isinstance(names, str) else names[0])
    if dataset not in DatasetCatalog.list():
        raise KeyError(f"--dataset {dataset!r} is not registered; give the --config-file that registers it")
    results = read_results(args.input)
    dicts = DatasetCatalog.get(dataset)
    records = {d["image_id"]: d for d in dicts}
    metadata = MetadataCatalog.get(dataset)
    predictions = predictions_by_image(results, args.input, records, metadata)
    outs = drawing_paths([d["file_name"] for d in dicts], args.output)  # checked before anything is written

    os.makedirs(args.output, exist_ok=True)
    for record, out_path in tqdm(list(zip(dicts, outs)), desc="images", unit="image"):
        image = read_image(record["file_name"], format="RGB")
        left = Visualizer(image, metadata)
        if record["image_id"] in predictions:
            pred = predictions[record["image_id"]]
            left = left.draw_instance_predictions(pred[pred.scores >= args.conf_threshold])
        else:
            left = left.get_output()
        left = left.get_image()
        right = Visualizer(image, metadata).draw_dataset_dict(record).get_image()
        Image.fromarray(np.concatenate([left, right], axis=1)).save(out_path)
    print(f"wrote {len(outs)} drawing(s) to {args.output}: predictions >= {args.conf_threshold} left, ground truth right")
    return 0


if __name__ == "__main__":
    sys.exit(main())
