"""The recipe: every setting of a run, typed, with its range and the seed's command-line flag.

A recipe file is YAML with one mapping per section below. The field metadata carries what the loader
validates (``choices``, ``range``) and ``flag``: the flag of the authors' timm ``train.py`` that the
field stands for, from which the README's mapping table is generated (``wmlp recipes flags``).

Runs inside images: Python 3.8 syntax.
"""

import dataclasses
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from ..vendors import VENDORS, dockerfiles


def setting(default, help: str = "", flag: str = "", choices=None, range=None, factory=None):
    """A recipe field: default, doc, seed flag, allowed values or inclusive numeric range."""
    meta = {"help": help, "flag": flag, "choices": choices, "range": range}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


INF = float("inf")
PRECISIONS = ["fp32", "fp16", "bf16"]


@dataclass
class ModelCfg:
    name: str = setting("WaveMLP_T_dw", "Wave-MLP variant (authors' or timm name)", "--model")
    num_classes: int = setting(1000, "classes of the head", "--num-classes", range=(1, 1_000_000))
    img_size: int = setting(224, "square input size (divisible by 32)", "--img-size", range=(32, 4096))
    drop_rate: float = setting(0.0, "dropout rate", "--drop", range=(0.0, 1.0))
    drop_path_rate: float = setting(0.1, "stochastic depth, linear over all blocks", "--drop-path", range=(0.0, 1.0))
    pretrained: bool = setting(False, "start from the released weights (local file)", "--pretrained")
    initial_checkpoint: str = setting("", "start from this checkpoint file", "--initial-checkpoint")
    channels_last: bool = setting(False, "channels_last memory format", "--channels-last")
    compile: bool = setting(False, "torch.compile the model where torch has it", "--torchcompile")
    fast_path: bool = setting(False, "fused token mixing: same function and weights, fewer memory passes", "")


@dataclass
class DataCfg:
    path: str = setting("", "dataset root (ImageNet layout: train/<class>/..., val/<class>/...)", "data_dir")
    train_split: str = setting("train", "training split folder", "--train-split")
    val_split: str = setting("val", "validation split folder", "--val-split")
    workers: int = setting(8, "data-loader worker processes per device", "--workers", range=(0, 256))
    pin_memory: bool = setting(True, "pinned host memory for device copies", "--pin-mem")
    prefetch_factor: int = setting(2, "batches prefetched per worker", "", range=(1, 64))
    pipeline: str = setting(
        "timm",
        "training input pipeline: timm's transform as is, or the same augmentation with scaled JPEG decode "
        "and uint8 batches normalised and erased on the device",
        "",
        choices=["timm", "fast"],
    )
    on_bad_image: str = setting("skip", "a corrupt image: skip it (counted) or fail", "", choices=["skip", "fail"])
    interpolation: str = setting(
        "bicubic", "eval resize interpolation", "--interpolation", choices=["bicubic", "bilinear", "nearest"]
    )
    crop_pct: float = setting(
        0.9, "eval centre-crop fraction (resize to img_size / crop_pct)", "--crop-pct", range=(0.1, 1.0)
    )
    mean: List[float] = setting(None, "normalisation mean", "--mean", factory=lambda: [0.485, 0.456, 0.406])
    std: List[float] = setting(None, "normalisation std", "--std", factory=lambda: [0.229, 0.224, 0.225])


@dataclass
class AugmentCfg:
    auto_augment: str = setting("rand-m9-mstd0.5-inc1", "RandAugment/AutoAugment policy ('' for none)", "--aa")
    color_jitter: float = setting(
        0.4, "colour jitter (no effect while auto_augment is set)", "--color-jitter", range=(0.0, 1.0)
    )
    reprob: float = setting(0.25, "random erasing probability", "--reprob", range=(0.0, 1.0))
    remode: str = setting("pixel", "random erasing mode", "--remode", choices=["pixel", "rand", "const"])
    recount: int = setting(1, "random erasing count", "--recount", range=(1, 16))
    hflip: float = setting(0.5, "horizontal flip probability", "--hflip", range=(0.0, 1.0))
    vflip: float = setting(0.0, "vertical flip probability", "--vflip", range=(0.0, 1.0))
    scale: List[float] = setting(None, "random-resized-crop scale range", "--scale", factory=lambda: [0.08, 1.0])
    ratio: List[float] = setting(None, "random-resized-crop aspect range", "--ratio", factory=lambda: [3 / 4, 4 / 3])
    train_interpolation: str = setting(
        "random",
        "training interpolation",
        "--train-interpolation",
        choices=["random", "bicubic", "bilinear", "nearest"],
    )
    mixup: float = setting(0.8, "mixup alpha (0 = off)", "--mixup", range=(0.0, 10.0))
    cutmix: float = setting(1.0, "cutmix alpha (0 = off)", "--cutmix", range=(0.0, 10.0))
    cutmix_minmax: Optional[List[float]] = setting(None, "cutmix min/max ratio (overrides alpha)", "--cutmix-minmax")
    mixup_prob: float = setting(1.0, "probability of mixup or cutmix per batch", "--mixup-prob", range=(0.0, 1.0))
    mixup_switch_prob: float = setting(
        0.5, "probability of cutmix instead of mixup", "--mixup-switch-prob", range=(0.0, 1.0)
    )
    mixup_mode: str = setting(
        "batch", "how mixup parameters are drawn", "--mixup-mode", choices=["batch", "pair", "elem"]
    )
    smoothing: float = setting(0.1, "label smoothing", "--smoothing", range=(0.0, 1.0))
    repeated_aug: bool = setting(True, "repeated augmentation (3 repeats, authors' sampler)", "--repeated-aug")


@dataclass
class OptimCfg:
    opt: str = setting("adamw", "optimizer (timm's factory name)", "--opt")
    lr: float = setting(1e-3, "peak learning rate (not scaled by batch size)", "--lr", range=(0.0, 100.0))
    opt_eps: float = setting(1e-8, "optimizer epsilon", "--opt-eps", range=(0.0, 1.0))
    opt_betas: Optional[List[float]] = setting(None, "optimizer betas", "--opt-betas")
    momentum: float = setting(0.9, "SGD momentum", "--momentum", range=(0.0, 1.0))
    weight_decay: float = setting(
        0.05, "weight decay (1-D params and biases excluded)", "--weight-decay", range=(0.0, 10.0)
    )
    clip_grad: Optional[float] = setting(None, "gradient clipping value (null = off)", "--clip-grad", range=(0.0, INF))
    clip_mode: str = setting("norm", "gradient clipping mode", "--clip-mode", choices=["norm", "value", "agc"])
    fused: bool = setting(False, "fused optimizer kernel where torch offers one", "")


@dataclass
class SchedCfg:
    sched: str = setting(
        "cosine",
        "lr schedule (timm's factory name)",
        "--sched",
        choices=["cosine", "step", "plateau", "tanh", "poly", "multistep"],
    )
    warmup_epochs: int = setting(5, "linear warm-up epochs", "--warmup-epochs", range=(0, 100_000))
    warmup_lr: float = setting(1e-6, "learning rate at the start of warm-up", "--warmup-lr", range=(0.0, 100.0))
    min_lr: float = setting(1e-5, "lower bound of the schedule", "--min-lr", range=(0.0, 100.0))
    cooldown_epochs: int = setting(10, "epochs at min_lr after the schedule", "--cooldown-epochs", range=(0, 100_000))
    decay_epochs: float = setting(100.0, "epoch interval of the step schedule", "--decay-epochs", range=(0.0, INF))
    decay_rate: float = setting(0.1, "decay factor of the step schedule", "--decay-rate", range=(0.0, 1.0))


@dataclass
class TrainCfg:
    epochs: int = setting(300, "epochs of the schedule (cool-down epochs come after)", "--epochs", range=(1, 100_000))
    batch_size: int = setting(128, "batch per device", "--batch-size", range=(1, 1_000_000))
    precision: str = setting(
        "fp16", "fp16 (with a grad scaler) / bf16 where supported / fp32", "--amp", choices=PRECISIONS
    )
    model_ema: bool = setting(True, "keep an EMA of the weights (parameters and buffers)", "--model-ema")
    model_ema_decay: float = setting(0.99996, "EMA decay per step", "--model-ema-decay", range=(0.0, 1.0))
    model_ema_force_cpu: bool = setting(False, "keep the EMA on the CPU", "--model-ema-force-cpu")
    seed: int = setting(42, "random seed (each rank adds its rank)", "--seed", range=(0, 2**31 - 1))
    output: str = setting("runs", "folder that holds run folders", "--output")
    experiment: str = setting("", "run folder name (default: recipe name and time)", "--experiment")
    resume: str = setting("", "'' (fresh), 'auto' (newest valid checkpoint in the run folder) or a file", "--resume")
    log_interval: int = setting(50, "steps between progress lines", "--log-interval", range=(1, 1_000_000))
    checkpoint_hist: int = setting(10, "best checkpoints kept (by eval metric)", "--checkpoint-hist", range=(1, 1000))
    checkpoint_every_steps: int = setting(
        0, "also save 'last' every N steps (0 = epoch ends only)", "", range=(0, 10_000_000)
    )
    eval_metric: str = setting(
        "top1", "metric that picks the best checkpoint", "--eval-metric", choices=["top1", "top5", "loss"]
    )
    convergence_top1: Optional[float] = setting(
        None, "top-1 the run must reach (the report's criterion)", "", range=(0.0, 100.0)
    )
    eval_ema: bool = setting(True, "pick the best checkpoint by the EMA's metric when EMA is on", "")
    sync_bn: bool = setting(False, "synchronised BatchNorm across ranks", "--sync-bn")
    dist_bn: str = setting(
        "reduce", "BatchNorm statistics across ranks before eval", "--dist-bn", choices=["reduce", "broadcast", ""]
    )
    max_steps_per_epoch: int = setting(
        0, "stop each epoch after N steps (0 = whole epoch); for smoke runs", "", range=(0, 10_000_000)
    )
    deterministic: bool = setting(
        False, "deterministic algorithms and fixed DDP gradient buckets: a resumed run ends bit for bit like an "
        "uninterrupted one (slower)", "",
    )
    requeue_signals: List[str] = setting(
        None, "signals that checkpoint and exit for requeue", "", factory=lambda: ["SIGTERM", "SIGUSR1"]
    )
    progress: bool = setting(True, "progress bar on rank 0", "")


@dataclass
class HardwareCfg:
    device: str = setting("auto", "auto, cuda (NVIDIA and CoreX) or cpu", "--device", choices=["auto", "cuda", "cpu"])
    vendor: str = setting(
        "", "{} (descriptive; detection decides)".format(", ".join(VENDORS)), "", choices=["", *VENDORS]
    )
    device_name: str = setting("", "the accelerator this recipe is tuned for", "")
    devices_per_node: int = setting(1, "devices a node shows (a BI-V150 board shows two)", "", range=(1, 1024))
    sdk: str = setting("", "CUDA or IXUCA SDK version the image carries", "")
    dist_backend: str = setting(
        "auto", "collectives: auto (nccl on devices, gloo on cpu), nccl, gloo", "", choices=["auto", "nccl", "gloo"]
    )


@dataclass
class ImageCfg:
    dockerfile: str = setting(
        "", "which Dockerfile under docker/ ('' = the vendor's)", "", choices=["", *dockerfiles()]
    )
    base: str = setting("", "base image (a CUDA PyTorch image or the site's CoreX SDK image; '' = the vendor's)", "")
    name: str = setting("wavemlp-kit", "image repository name", "")
    tag: str = setting("", "image tag", "")
    runtime: str = setting(
        "",
        "container runtime for devices ({}, or '' for none)".format(
            ", ".join(v.docker_runtime for v in VENDORS.values() if v.docker_runtime)
        ),
        "",
    )


@dataclass
class ClusterCfg:
    """The job's shape, which follows from the model and its hardware. Where the job runs (partition,
    account, container runtime, mounts, network) belongs to a site file, not here (``wmlp sites``)."""

    time: str = setting("24:00:00", "time limit", "")
    gpu_request: str = setting(
        "gres",
        "how GPUs are asked for: gres (--gres=gpu:N), gpus-per-node or none (a site file may override)",
        "",
        choices=["gres", "gpus-per-node", "none"],
    )
    cpus_per_task: int = setting(16, "CPUs per node task", "", range=(1, 4096))
    mem: str = setting("", "memory per node, e.g. 500G ('' = the partition's default; '0' = all of it)", "")
    signal: str = setting("USR1", "signal Slurm sends before the time limit", "")
    signal_grace: int = setting(120, "seconds between that signal and the time limit", "", range=(1, 86_400))
    requeue: bool = setting(True, "requeue the job after a preemption checkpoint", "")
    max_requeues: int = setting(10, "requeues before the job stops asking for more", "", range=(0, 10_000))
    master_port: int = setting(29500, "first rendezvous port tried (a free one is taken at run time)", "",
                               range=(1024, 65535))


# Keys that moved from recipes to site files: an old recipe gets told where they went.
SITE_KEYS = {
    "cluster.partition": "partition",
    "cluster.account": "account",
    "cluster.qos": "qos",
    "cluster.constraint": "constraint",
    "cluster.container_runtime": "runtime",
    "cluster.container_mounts": "mounts",
}


@dataclass
class Recipe:
    description: str = setting("", "what this recipe is for", "")
    model: ModelCfg = field(default_factory=ModelCfg)
    data: DataCfg = field(default_factory=DataCfg)
    augment: AugmentCfg = field(default_factory=AugmentCfg)
    optim: OptimCfg = field(default_factory=OptimCfg)
    sched: SchedCfg = field(default_factory=SchedCfg)
    train: TrainCfg = field(default_factory=TrainCfg)
    hardware: HardwareCfg = field(default_factory=HardwareCfg)
    image: ImageCfg = field(default_factory=ImageCfg)
    cluster: ClusterCfg = field(default_factory=ClusterCfg)
    env: Dict[str, str] = field(default_factory=dict, metadata={"help": "environment of every process", "flag": ""})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def seed_flag_table() -> List[List[str]]:
    """(seed flag, recipe key, default) for every field that stands for a flag of the seed's script."""
    rows = []
    for section in dataclasses.fields(Recipe):
        if not dataclasses.is_dataclass(section.type):
            continue
        for f in dataclasses.fields(section.type):
            if f.metadata.get("flag"):
                default = f.default_factory() if f.default is dataclasses.MISSING else f.default
                rows.append([f.metadata["flag"], f"{section.name}.{f.name}", repr(default)])
    return rows
