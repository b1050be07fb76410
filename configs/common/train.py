"""Training defaults shared by every config (detectron2 LazyConfig ``train`` namespace)."""
train = dict(
    output_dir="./output",
    init_checkpoint="detectron2://ImageNetPretrained/torchvision/R-50.pkl",
    # Loading init_checkpoint fails on unexpected keys or shape mismatches (e.g. another variant's
    # checkpoint) with a report; True only warns (e.g. fine-tuning with another number of classes).
    allow_checkpoint_mismatch=False,
    # --eval-only (and the tools) refuse to run without weights; True evaluates a random model on purpose.
    allow_random_init=False,
    max_iter=90000,
    device="auto",  # cuda when available, else cpu
    seed=-1,  # >= 0: seed every RNG (seed + rank), as detectron2's default_setup does
    # fp32, as every official recipe trains. train.amp.enabled=True switches to detectron2's AMPTrainer
    # (mixed precision, CUDA only; CPU always trains in fp32): less memory, but no longer the official recipe.
    amp=dict(enabled=False),
    # --eval-only and the Predictor: torch.compile the backbone and transformer with the loaded weights frozen
    # in (detr_core.compiled; inference only, a one-off compilation per input size, needs a C++ compiler).
    compile_inference=False,
    clip_grad=dict(enabled=True, max_norm=0.1, norm_type=2.0),  # global norm, as all five papers
    ddp=dict(broadcast_buffers=False, find_unused_parameters=False, fp16_compression=False),
    checkpointer=dict(period=5000, max_to_keep=100),
    eval_period=5000,
    log_period=20,
    metrics_window=20,  # metrics.json: median over this many iterations (1: raw values)
)
