"""Typed, frozen configuration for every component, the named presets, and key=value overrides.

A config is built once and never mutated: derived values are checked in ``__post_init__`` and
changes are made with ``dataclasses.replace`` (or :func:`apply_overrides`), which returns a new
object. Every field is a plain JSON type, so ``config.json`` round-trips exactly.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path

from seemore.errors import UserError

# 2: the image comes before the question in every prompt (1 put the question first), so a
# version-1 model would read its prompts wrongly
FORMAT_VERSION = 2
NORMS = ("layernorm", "rmsnorm")
MLPS = ("gelu", "gelu_exact", "quick_gelu", "swiglu")  # decoder.mlp, vision.mlp (layers/mlp.py)
BIASES = ("all", "qkv", "none")  # decoder.bias (layers/block.py)
RESIZE_POLICIES = ("squash", "letterbox")  # data.resize (data/images.py)
ON_BAD = ("error", "skip")  # data.on_bad_sample (data/user.py)
SCHEDULES = ("cosine", "wsd")  # train.schedule (train/loop.py)
# drawing defaults (models/vlm.py, `seemore draw`): the most faithful settings measured
DRAW_GUIDANCE = 2.0  # classifier-free guidance scale
DRAW_TEMPERATURE = 0.2
COMPONENTS = ("vision", "projector", "decoder", "text")


@dataclass(frozen=True)
class VisionConfig:
    """The ViT image encoder."""

    image_size: int = 64
    patch_size: int = 8
    dim: int = 128
    n_layers: int = 4
    n_heads: int = 4
    mlp_ratio: float = 4.0
    mlp: str = "gelu"  # as decoder.mlp; hidden_dim 0: dim * mlp_ratio
    hidden_dim: int = 0
    norm: str = "layernorm"
    norm_eps: float = 0.0  # 0: the norm's usual epsilon
    # "patch": one p x p convolution (the ViT paper); "conv": a stack of 3x3 stride-2
    # convolutions (layers/conv_stem.py; the default preset's, README says why)
    stem: str = "patch"
    patch_bias: bool = True  # the patch convolution's bias (CLIP has none)
    # a class token before the patches (ViT, CLIP; SigLIP has none: its features are the
    # patches only)
    class_token: bool = True
    pre_norm: bool = False  # a norm on the embeddings before the first block (CLIP's)
    final_norm: bool = True  # a norm on the last block's output (CLIP's features have none)
    qk_norm: bool = False  # RMS-normalise query and key heads (see layers/attention.py)
    # per-channel pixel statistics the ViT normalises with (of the shapes world: a dark
    # background, so a plain [-1, 1] scaling would leave the objects a small signal)
    image_mean: tuple[float, float, float] = (0.23, 0.22, 0.22)
    image_std: tuple[float, float, float] = (0.14, 0.11, 0.11)

    def __post_init__(self) -> None:
        _check_sizes("vision", self, ("image_size", "patch_size", "dim", "n_heads"))
        _check(self.image_size % self.patch_size == 0,
               f"vision.image_size ({self.image_size}) must be a multiple of "
               f"vision.patch_size ({self.patch_size})")
        _check(self.dim % self.n_heads == 0,
               f"vision.dim ({self.dim}) must be divisible by vision.n_heads ({self.n_heads})")
        _check(self.norm in NORMS, f"vision.norm must be one of {NORMS}, got {self.norm!r}")
        _check(self.stem in ("patch", "conv"),
               f"vision.stem must be 'patch' or 'conv', got {self.stem!r}")
        _check(self.mlp in MLPS, f"vision.mlp must be one of {MLPS}, got {self.mlp!r}")
        _check(len(self.image_mean) == 3 and len(self.image_std) == 3
               and all(s > 0 for s in self.image_std),
               "vision.image_mean and vision.image_std must be three numbers each (red, "
               "green, blue), the standard deviations positive")
        p = self.patch_size
        _check(self.stem == "patch" or (p >= 2 and p & (p - 1) == 0),
               f"vision.stem='conv' needs a power-of-two vision.patch_size, got {p}")

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size

    @property
    def hidden(self) -> int:
        """The MLP's hidden width."""
        return self.hidden_dim or int(self.dim * self.mlp_ratio)


@dataclass(frozen=True)
class ProjectorConfig:
    """The MLP that turns vision features into visual tokens for the decoder.

    tokens: "patches" uses every patch feature (LLaVA); "cls" uses only the class token
    (the original seemore). pixel_shuffle: merge each s x s block of patches into one token
    (s*s times fewer, s*s times wider visual tokens), as in Idefics3 and nanoVLM.
    """

    tokens: str = "patches"
    pixel_shuffle: int = 1

    def __post_init__(self) -> None:
        _check(self.tokens in ("patches", "cls"),
               f"projector.tokens must be 'patches' or 'cls', got {self.tokens!r}")
        _check(self.pixel_shuffle >= 1, "projector.pixel_shuffle must be >= 1")
        _check(self.tokens == "patches" or self.pixel_shuffle == 1,
               "projector.pixel_shuffle needs projector.tokens='patches'")


@dataclass(frozen=True)
class DecoderConfig:
    """The decoder-only language model."""

    # the run's tokenizer's size, set when a run starts (a saved model's config holds it);
    # not a setting (DERIVED, below)
    vocab_size: int = 0
    dim: int = 128
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int = 0  # 0 means n_heads (plain multi-head attention); fewer means GQA
    mlp_ratio: float = 4.0
    # the feed-forward network: "gelu" (GPT-2's, tanh approximation), "gelu_exact",
    # "quick_gelu" (CLIP's) or "swiglu" (Llama's; layers/mlp.py); its hidden width is
    # hidden_dim, or dim * mlp_ratio when 0
    mlp: str = "gelu"
    hidden_dim: int = 0
    # the linear layers with biases: "all", "qkv" (the query, key and value projections
    # only, as Qwen2) or "none" (as Llama)
    bias: str = "all"
    norm: str = "rmsnorm"
    norm_eps: float = 0.0  # 0: the norm's usual epsilon (RMSNorm 1e-6, LayerNorm 1e-5)
    max_seq_len: int = 256
    rope_base: float = 10000.0
    tie_embeddings: bool = True
    qk_norm: bool = False  # RMS-normalise query and key heads (see layers/attention.py)

    def __post_init__(self) -> None:
        _check_sizes("decoder", self, ("dim", "n_heads", "max_seq_len"))
        _check(self.n_kv_heads >= 0, f"decoder.n_kv_heads must be >= 0 (0: decoder.n_heads), "
                                     f"got {self.n_kv_heads}")
        _check(self.dim % self.n_heads == 0,
               f"decoder.dim ({self.dim}) must be divisible by decoder.n_heads ({self.n_heads})")
        _check((self.dim // self.n_heads) % 2 == 0, "decoder head width must be even for RoPE")
        _check(self.n_heads % self.kv_heads == 0,
               f"decoder.n_heads ({self.n_heads}) must be a multiple of "
               f"decoder.n_kv_heads ({self.n_kv_heads})")
        _check(self.norm in NORMS, f"decoder.norm must be one of {NORMS}, got {self.norm!r}")
        _check(self.mlp in MLPS, f"decoder.mlp must be one of {MLPS}, got {self.mlp!r}")
        _check(self.bias in BIASES, f"decoder.bias must be one of {BIASES}, got {self.bias!r}")
        _check(self.rope_base > 1, f"decoder.rope_base must be above 1, got {self.rope_base:g}")

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def hidden(self) -> int:
        """The MLP's hidden width."""
        return self.hidden_dim or int(self.dim * self.mlp_ratio)


@dataclass(frozen=True)
class ClipConfig:
    """Contrastive pretraining of the ViT (models/clip.py): a small text transformer over the
    caption's characters, and linear maps of both sides into a joint space."""

    text_dim: int = 128
    text_layers: int = 2
    text_heads: int = 4
    text_causal: bool = True  # CLIP's text encoder is causal; False reads both ways
    text_max_len: int = 192
    embed_dim: int = 128
    loss: str = "infonce"  # "infonce" (CLIP) or "sigmoid" (SigLIP)

    def __post_init__(self) -> None:
        for key in ("text_dim", "text_heads", "text_max_len", "embed_dim"):
            _check(getattr(self, key) >= 1, f"clip.{key} must be >= 1, got {getattr(self, key)}")
        _check(self.text_layers >= 0, f"clip.text_layers must be >= 0, got {self.text_layers}")
        _check(self.text_dim % self.text_heads == 0,
               f"clip.text_dim ({self.text_dim}) must be divisible by clip.text_heads "
               f"({self.text_heads})")
        _check(self.loss in ("infonce", "sigmoid"),
               f"clip.loss must be 'infonce' or 'sigmoid', got {self.loss!r}")


@dataclass(frozen=True)
class MoEConfig:
    """Sparse mixture-of-experts feed-forward layers (layers/moe.py). num_experts 0 means
    every block keeps its dense MLP."""

    num_experts: int = 0
    top_k: int = 2
    # which blocks get experts: the last of every n (1: all of them, 2: every other one)
    every_n_layers: int = 1
    where: str = "decoder"  # "decoder", "vision" or "both"
    noise: bool = True  # learned noise on the router logits in training (noisy top-k)
    # 0: no limit; c: an expert takes at most c * tokens * top_k / num_experts assignments
    # of a training step, the rest are dropped (never outside training)
    capacity_factor: float = 0.0
    balance_loss_weight: float = 0.01  # Switch Transformer load balancing
    z_loss_weight: float = 0.001  # ST-MoE router z-loss

    def __post_init__(self) -> None:
        _check(self.num_experts >= 0, "moe.num_experts must be >= 0")
        _check(not self.num_experts or 1 <= self.top_k <= self.num_experts,
               f"moe.top_k ({self.top_k}) must be between 1 and moe.num_experts "
               f"({self.num_experts})")
        _check(self.every_n_layers >= 1, "moe.every_n_layers must be >= 1")
        _check(self.where in ("decoder", "vision", "both"),
               f"moe.where must be decoder, vision or both, got {self.where!r}")
        _check(self.capacity_factor >= 0, "moe.capacity_factor must be >= 0")
        _check(self.balance_loss_weight >= 0 and self.z_loss_weight >= 0,
               "moe loss weights must be >= 0")

    def layers(self, part: str, n_layers: int) -> list[bool]:
        """Which of the n_layers blocks of part ("decoder" or "vision") have experts."""
        on = self.num_experts > 0 and self.where in (part, "both")
        return [on and i % self.every_n_layers == self.every_n_layers - 1
                for i in range(n_layers)]


@dataclass(frozen=True)
class VQConfig:
    """The VQ-VAE image tokenizer for text-to-image (models/vq.py). Images are
    vision.image_size square; each stride-2 stage halves the side, so three stages turn a
    64x64 image into 8x8 codes."""

    channels: tuple[int, ...] = (32, 64, 128)  # the encoder's width at each stage
    codebook_size: int = 512
    code_dim: int = 32
    commitment: float = 0.25  # weight of the loss that keeps the encoder near its codes
    # weight of the edge loss (models/vq.py, edge_error): 0 is plain pixel MSE
    edge_weight: float = 2.0
    ema_decay: float = 0.99  # of the codebook's moving averages
    # an entry assigned fewer encoder outputs than this (moving average per batch) is dead
    # and restarts at a random output of the batch
    restart_below: float = 1.0

    def __post_init__(self) -> None:
        _check(len(self.channels) >= 1 and min(self.channels) > 0,
               "vq.channels must be one or more positive widths")
        _check(self.codebook_size >= 2 and self.code_dim >= 1,
               "vq.codebook_size must be >= 2 and vq.code_dim >= 1")
        _check(0 < self.ema_decay < 1, "vq.ema_decay must be between 0 and 1")
        _check(self.edge_weight >= 0 and self.commitment >= 0,
               "vq.edge_weight and vq.commitment must not be negative")


@dataclass(frozen=True)
class ModelConfig:
    vision: VisionConfig = field(default_factory=VisionConfig)
    projector: ProjectorConfig = field(default_factory=ProjectorConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)
    moe: MoEConfig = field(default_factory=MoEConfig)
    vq: VQConfig = field(default_factory=VQConfig)
    # the text tokenizer: "char", one token per character (as in the original seemore), or
    # "bpe", byte-level BPE learned from the training text, whose tokens are mostly whole
    # words, so that sequences are several times shorter; bpe_vocab_size caps its byte
    # tokens and merges; or "pretrained", a pretrained decoder's own, taken from the model
    # folder train.init_from names (written by `seemore import`)
    tokenizer: str = "char"
    bpe_vocab_size: int = 1024

    def __post_init__(self) -> None:
        _check(self.tokenizer in ("char", "bpe", "pretrained"),
               f"model.tokenizer must be 'char', 'bpe' or 'pretrained', got {self.tokenizer!r}")
        _check(self.bpe_vocab_size >= 256,
               f"model.bpe_vocab_size ({self.bpe_vocab_size}) must be at least 256, one "
               "token per byte")
        _check(self.projector.tokens != "cls" or self.vision.class_token,
               "projector.tokens=cls needs a class token (vision.class_token=true)")
        for part in ("vision", "decoder"):
            mlp = getattr(self, part).mlp
            experts = self.moe.num_experts and self.moe.where in (part, "both")
            _check(not experts or mlp != "swiglu",
                   f"model.moe: the experts are plain MLPs; a {part}.mlp={mlp} model takes none")
        s = self.projector.pixel_shuffle
        _check(self.vision.grid_size % s == 0,
               f"projector.pixel_shuffle ({s}) must divide the patch grid "
               f"({self.vision.grid_size})")
        factor = 2 ** len(self.vq.channels)
        _check(self.vision.image_size % factor == 0,
               f"vision.image_size ({self.vision.image_size}) must be a multiple of "
               f"{factor} for {len(self.vq.channels)} VQ stages (vq.channels)")

    @property
    def n_image_codes(self) -> int:
        """How many codes the VQ-VAE writes for one image."""
        return (self.vision.image_size // 2 ** len(self.vq.channels)) ** 2

    @property
    def n_visual_tokens(self) -> int:
        if self.projector.tokens == "cls":
            return 1
        return (self.vision.grid_size // self.projector.pixel_shuffle) ** 2


@dataclass(frozen=True)
class DataConfig:
    """Which dataset, and how training examples are drawn from it."""

    # "shapes", "digits" (scikit-learn's bundled handwritten digits), or the path of a
    # user's dataset: a .csv file, a .jsonl/.json file of LLaVA conversations or an image
    # folder with metadata.jsonl/metadata.csv (data/records.py); or several, weighted:
    # "shapes:3,photos.csv:1" (data/mixture.py)
    dataset: str = "shapes"
    image_column: str = ""  # a CSV's image-path column (default: b64string_images or image)
    # a user's row that cannot be read: "error" stops before training, "skip" leaves it out
    on_bad_sample: str = "error"
    # UTF-8 text for train.objective=lm; empty: text written by the dataset
    text_file: str = ""
    # the tasks to train on: "caption", the dataset's question types and "draw" (text to
    # image, for a model with train.vq_from); empty: all of them
    tasks: tuple[str, ...] = ()
    # how many of them each image carries, as one conversation about it (data/collate.py);
    # 0: all of them
    tasks_per_image: int = 1
    # DataLoader worker processes that make the batches (and decode a user's images when
    # a dataset is opened); -1: none when the model trains on the CPU, whose step uses
    # every core (a worker process slowed the default run), up to 8 on a GPU, where the
    # batches are made on otherwise idle cores (data/datasets.py, data_workers)
    num_workers: int = -1
    # how an image that is not square becomes the model's square input: "squash" stretches
    # it, "letterbox" pads its short side (data/images.py)
    resize: str = "squash"
    # with the draw task: the share of batches that are text-to-image, and the share of
    # those examples whose caption is left out, so that the model also learns to draw
    # unconditionally (what classifier-free guidance steers away from)
    draw_share: float = 0.5
    uncond_share: float = 0.1

    def __post_init__(self) -> None:
        _check(bool(self.dataset), "data.dataset must be shapes, digits, the path of a "
                                   "dataset, or several as a:3,b:1")
        _check(self.on_bad_sample in ON_BAD, f"data.on_bad_sample must be error or skip, got "
                                             f"{self.on_bad_sample!r}")
        _check(0 <= self.draw_share <= 1 and 0 <= self.uncond_share < 1,
               "data.draw_share must be in [0, 1] and data.uncond_share in [0, 1)")
        _check(self.resize in RESIZE_POLICIES,
               f"data.resize must be one of {', '.join(RESIZE_POLICIES)}, got {self.resize!r}")
        _check(self.tasks_per_image >= 0, "data.tasks_per_image must be >= 1, or 0 for all "
                                          "of the run's tasks")
        _check(self.num_workers >= -1, f"data.num_workers must be >= 0, or -1 for automatic, "
                                       f"got {self.num_workers}")


@dataclass(frozen=True)
class TrainConfig:
    # what the run trains: "vlm", the captioning and question-answering model; "clip", the
    # ViT with a text encoder by contrastive learning (models/clip.py); "lm", the VLM's
    # decoder alone on plain text (data.text_file); "vq", the VQ-VAE image tokenizer
    # (models/vq.py); the registry in objectives/ holds them
    objective: str = "vlm"
    # model folders this run starts from: every component they hold (vision, projector,
    # decoder, text) is copied in, a later folder's over an earlier one's
    init_from: tuple[str, ...] = ()
    vision_from: str = ""  # a run or model folder whose ViT this run starts from
    # a VQ run's folder: the VLM takes in its (frozen) VQ-VAE, its vocabulary gains the
    # image codes, <boi> and <eoi>, and it learns to draw (the "draw" task)
    vq_from: str = ""
    freeze: tuple[str, ...] = ()  # components that do not train (no gradients, no state)
    # LoRA (layers/lora.py): the rank of low-rank adapters on the linear layers that
    # lora_targets names; their components' own weights are then frozen, the adapters
    # train and are saved on their own (adapters.safetensors; `seemore merge-lora` merges
    # them). 0: none. The update is scaled by lora_alpha / lora
    lora: int = 0
    lora_alpha: float = 16.0
    lora_targets: tuple[str, ...] = ("decoder",)
    steps: int = 2000
    # the global batch: split evenly across torchrun's processes and grad_accum micro-steps
    batch_size: int = 64
    grad_accum: int = 1  # micro-steps whose gradients add up to one optimizer step
    lr: float = 2e-3
    min_lr: float = 1e-4
    # the peak learning rate of the ViT and the projector (their schedule is the same shape,
    # scaled by vision_lr / lr); 0: lr. The unified recipe's decoder, short of steps to
    # learn drawing, gains from a high rate; its ViT and projector at 1e-3 answer
    # questions better than at the decoder's rate (recipes.py)
    vision_lr: float = 0.0
    warmup_steps: int = 100
    # the learning rate after warmup: "cosine" decays from lr to min_lr over the rest of the
    # run; "wsd" (warmup-stable-decay) holds lr, then decays linearly to min_lr over the
    # last `cooldown` share of the steps
    schedule: str = "cosine"
    cooldown: float = 0.2
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.98)
    grad_clip: float = 1.0  # the largest gradient norm; 0: no clipping
    # auto: bf16 autocast where the hardware runs it fast, else fp32; bf16; fp16 (autocast
    # with a gradient scaler, for GPUs without bf16); fp32
    precision: str = "auto"
    device: str = "auto"  # auto: cuda, then mps, then cpu
    seed: int = 0
    # run the training forward and backward through torch.compile: the first step compiles,
    # later steps run faster (README, "Configuration and presets", measures both)
    compile: bool = False
    eval_every: int = 500
    eval_scenes: int = 100  # val scenes in the periodic evaluation
    final_eval_scenes: int = 500  # test and compositional scenes in the final evaluation; 0: none
    log_every: int = 10
    # write a checkpoint (train/checkpoint.py) every n steps and at the end, for --resume;
    # 0: none
    checkpoint_every: int = 0
    keep_checkpoints: int = 2  # the newest ones kept
    # "mlflow": log params, metrics and artifacts to MLflow too (tracking.py); "": only
    # metrics.jsonl
    track: str = ""

    def __post_init__(self) -> None:
        unknown = set(self.freeze) - set(COMPONENTS)
        _check(not unknown, f"train.freeze: unknown components {', '.join(sorted(unknown))}; "
                            f"choose from {', '.join(COMPONENTS)}")
        _check(not self.vq_from or self.objective == "vlm",
               f"train.vq_from is for the vlm objective, not {self.objective}")
        _check(self.steps > 0, "train.steps must be positive")
        _check(self.lora >= 0 and self.lora_alpha > 0,
               "train.lora (the adapters' rank) must be >= 0 and train.lora_alpha positive")
        _check(not self.lora or self.lora_targets, "train.lora needs train.lora_targets")
        _check(self.schedule in SCHEDULES, f"train.schedule must be one of "
                                           f"{', '.join(SCHEDULES)}, got {self.schedule!r}")
        _check(0 < self.cooldown <= 1, f"train.cooldown must be in (0, 1], got {self.cooldown}")
        _check(0 < self.lr < math.inf and 0 <= self.vision_lr < math.inf,
               "train.lr must be positive and train.vision_lr positive or 0 (0: train.lr)")
        _check(self.min_lr >= 0, f"train.min_lr must be >= 0, got {self.min_lr:g}")
        _check(self.warmup_steps >= 0, f"train.warmup_steps must be >= 0, got "
                                       f"{self.warmup_steps}")
        _check(self.weight_decay >= 0, f"train.weight_decay must be >= 0, got "
                                       f"{self.weight_decay:g}")
        _check(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
               f"train.betas must be two numbers in [0, 1), such as 0.9,0.98; got "
               f"{','.join(f'{b:g}' for b in self.betas)}")
        _check(self.log_every >= 1, f"train.log_every must be >= 1, got {self.log_every}")
        _check(self.track in ("", "mlflow"), f"train.track must be mlflow or empty, got "
                                             f"{self.track!r}")
        _check(self.checkpoint_every >= 0 and self.keep_checkpoints >= 1,
               "train.checkpoint_every must be >= 0 and train.keep_checkpoints >= 1")
        _check(self.grad_clip >= 0, f"train.grad_clip must be >= 0 (0: no clipping), got "
                                    f"{self.grad_clip:g}")
        _check(self.eval_every >= 0, f"train.eval_every must be >= 0 (0: none), got "
                                     f"{self.eval_every}")
        _check(self.eval_scenes >= 1, f"train.eval_scenes must be >= 1, got {self.eval_scenes}")
        _check(self.final_eval_scenes >= 0, f"train.final_eval_scenes must be >= 0 (0: none), "
                                            f"got {self.final_eval_scenes}")
        _check(self.batch_size > 0, "train.batch_size must be positive")
        _check(self.grad_accum >= 1, "train.grad_accum must be >= 1")
        _check(self.precision in ("auto", "bf16", "fp16", "fp32"),
               f"train.precision must be auto, bf16, fp16 or fp32, got {self.precision!r}")
        _check(self.device in ("auto", "cpu", "cuda", "mps") or self.device.startswith("cuda:"),
               f"train.device must be auto, cpu, cuda, cuda:N or mps, got {self.device!r}")

    def check_schedule(self) -> None:
        """Refuse a min_lr above lr, where the schedule would climb to min_lr instead of
        decaying to it. Checked when a run starts rather than in every config: models
        trained before the check (the pretrained recipe's instruct stage had lr 2e-5 under
        the default min_lr of 1e-4) still load."""
        _check(self.min_lr <= self.lr, f"train.min_lr ({self.min_lr:g}) must be at most "
                                       f"train.lr ({self.lr:g}), where the schedule decays "
                                       f"to; set train.min_lr too")


@dataclass(frozen=True)
class Config:
    """Everything about a run: the model, the data and the training schedule."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    preset: str = "default"

    def __post_init__(self) -> None:
        _check("draw" not in self.data.tasks or bool(self.train.vq_from),
               "data.tasks: draw needs an image tokenizer, train.vq_from=<a vq run>")

    def to_dict(self) -> dict:
        return {"format_version": FORMAT_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> Config:
        d = dict(d)
        version = d.pop("format_version", FORMAT_VERSION)
        _check(version == FORMAT_VERSION,
               f"config format_version {version} is not supported (this seemore reads "
               f"{FORMAT_VERSION}; version 1 models put the question before the image, "
               "retrain them)")
        return _build(cls, d, "")

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Config:
        return cls.from_dict(json.loads(Path(path).read_text()))


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise UserError(message)


def _check_sizes(part: str, c, positive: tuple[str, ...]) -> None:
    """A network's sizes: the positive ones, n_layers and hidden_dim (0: dim * mlp_ratio)
    of 0 or more, a positive mlp_ratio; before anything divides by them."""
    for key in positive:
        _check(getattr(c, key) >= 1, f"{part}.{key} must be >= 1, got {getattr(c, key)}")
    _check(c.n_layers >= 0, f"{part}.n_layers must be >= 0, got {c.n_layers}")
    _check(c.hidden_dim >= 0 and c.mlp_ratio > 0, f"{part}.hidden_dim must be >= 0 and "
                                                  f"{part}.mlp_ratio positive")
    _check(c.hidden >= 1, f"{part}.mlp_ratio ({c.mlp_ratio:g}) leaves the MLP no hidden "
                          f"units at {part}.dim {c.dim}")
    _check(c.norm_eps >= 0, f"{part}.norm_eps must be >= 0 (0: the norm's usual), got "
                            f"{c.norm_eps:g}")


def _build(cls, d: dict, prefix: str):
    """Build dataclass ``cls`` from a dict, recursing into nested configs."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    _check(not unknown, f"unknown config keys: {', '.join(prefix + k for k in sorted(unknown))}")
    kwargs = {}
    for name, value in d.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value, f"{prefix}{name}.")
        elif typing.get_origin(hint) is tuple:
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)


# ---------------------------------------------------------------------------------------------
# Presets: exact names only. "tiny" is for tests, "default" is what `seemore train` runs
# (README, "How the model learned to see", says why it is built as it is), "long" the same
# model trained four times as long, "seemore-classic" has the dimensions of the original
# seemore notebook and "seemoe" its mixture-of-experts variant.

# The built-in presets' MLPs use the exact (erf) GELU, as the original seemore did: on
# CPUs PyTorch's tanh approximation ran 3x slower, forward and backward, a tenth of the
# default preset's training step (README, "Where the time goes"). The field's default
# stays "gelu", the tanh one, which the models saved before it have in their config.
EXACT_GELU = "gelu_exact"

PRESETS: dict[str, Config] = {
    "tiny": Config(
        preset="tiny",
        model=ModelConfig(
            vision=VisionConfig(image_size=32, patch_size=8, dim=64, n_layers=2, n_heads=2,
                                mlp=EXACT_GELU),
            decoder=DecoderConfig(dim=64, n_layers=2, n_heads=2, max_seq_len=192,
                                  mlp=EXACT_GELU),
        ),
        train=TrainConfig(steps=60, batch_size=32, lr=3e-3, warmup_steps=10, eval_every=0,
                          eval_scenes=20, final_eval_scenes=40, log_every=5),
    ),
    "default": Config(
        preset="default",
        model=ModelConfig(
            vision=VisionConfig(image_size=64, patch_size=8, dim=128, n_layers=4, n_heads=4,
                                stem="conv", mlp=EXACT_GELU),
            projector=ProjectorConfig(tokens="patches", pixel_shuffle=1),
            decoder=DecoderConfig(dim=128, n_layers=4, n_heads=4, max_seq_len=256,
                                  mlp=EXACT_GELU),
            tokenizer="bpe",
        ),
        data=DataConfig(tasks_per_image=0),
        # the rate held at its peak until the last 300 steps: the position lookup forms
        # late and only while the rate is high (README, "How the model learned to see")
        train=TrainConfig(steps=1500, lr=2e-3, vision_lr=5e-4, eval_every=250,
                          schedule="wsd"),
    ),
    "seemore-classic": Config(
        preset="seemore-classic",
        model=ModelConfig(
            vision=VisionConfig(image_size=96, patch_size=16, dim=512, n_layers=3, n_heads=8,
                                norm="layernorm", mlp=EXACT_GELU),
            projector=ProjectorConfig(tokens="cls"),
            decoder=DecoderConfig(dim=128, n_layers=8, n_heads=8, norm="layernorm",
                                  max_seq_len=192, tie_embeddings=False, mlp=EXACT_GELU),
        ),
        train=TrainConfig(batch_size=16, lr=1e-3),
    ),
}
# the default model trained four times as long, with the cosine schedule its README figures
# were measured with
PRESETS["long"] = dataclasses.replace(
    PRESETS["default"], preset="long",
    train=dataclasses.replace(PRESETS["default"].train, steps=4000, eval_every=500,
                              schedule="cosine"))
# the original's seeMoE: seemore-classic with every decoder MLP a mixture of 8 experts, top-2
PRESETS["seemoe"] = dataclasses.replace(
    PRESETS["seemore-classic"], preset="seemoe",
    model=dataclasses.replace(PRESETS["seemore-classic"].model,
                              moe=MoEConfig(num_experts=8, top_k=2)))


def get_preset(name: str) -> Config:
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return PRESETS[name]


# ---------------------------------------------------------------------------------------------
# key=value overrides, typed from the dataclass fields: "model.decoder.dim=256 train.steps=10".


# keys a run sets itself, with what they are
DERIVED = {"model.decoder.vocab_size": "the size of the run's tokenizer, set when the run "
                                       "starts (model.bpe_vocab_size sizes a BPE tokenizer)"}


def override_keys(cls=Config, prefix: str = "") -> dict[str, type]:
    """Every settable dotted key and its type (the preset's name is chosen with --preset)."""
    keys = {}
    for name, hint in typing.get_type_hints(cls).items():
        if (cls is Config and name == "preset") or prefix + name in DERIVED:
            continue
        if dataclasses.is_dataclass(hint):
            keys.update(override_keys(hint, f"{prefix}{name}."))
        else:
            keys[prefix + name] = hint
    return keys


def _parse_value(key: str, text: str, hint):
    try:
        if hint is bool:
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError
            return text.lower() in ("true", "1")
        if typing.get_origin(hint) is tuple:
            inner = typing.get_args(hint)[0]
            return tuple(inner(x) for x in text.split(",")) if text else ()
        return hint(text)
    except ValueError:
        if typing.get_origin(hint) is tuple:
            raise UserError(f"override {key}={text!r}: expected "
                            f"{typing.get_args(hint)[0].__name__} values separated by "
                            f"commas, such as {key}=a,b") from None
        raise UserError(f"override {key}={text!r}: expected a value of type "
                        f"{getattr(hint, '__name__', hint)}") from None


def apply_overrides(config: Config, overrides: list[str]) -> Config:
    """A new config with the key=value overrides applied; checked once, after all of them."""
    keys = override_keys()
    d = dataclasses.asdict(config)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise UserError(f"override {item!r} is not of the form key=value")
        if key in DERIVED:
            raise UserError(f"{key} is {DERIVED[key]}; it cannot be overridden")
        if key not in keys:
            raise UserError(f"unknown config key {key!r}; see `seemore train --help` for the list")
        *parents, name = key.split(".")
        node = d
        for part in parents:
            node = node[part]
        node[name] = _parse_value(key, text, keys[key])
    return _build(Config, d, "")
