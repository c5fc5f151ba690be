"""Image editor role on FLUX.2-klein: ``Flux2KleinPipeline`` edits, ``Flux2KleinInpaintPipeline`` erases.

Stage 2 edits the first frame from the instruction (the frame is the pipeline's reference image), and
stage 3 erases the grounded foreground from the edited frame (image + mask inpainting). Both pipelines
share one set of modules (``from_pipe``), so erasing costs no extra memory.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from .model_support import (
    COMMON_OPTION_KEYS,
    PipelineBackend,
    eval_mode,
    fit_size,
    float_to_uint8,
    generator,
    mask_to_pil,
    resize_image,
    tiny_chat_tokenizer,
    to_pil,
)
from .protocols import Resources

#: What stage 3 asks the inpainter to paint where the foreground was, when the caller gives no prompt.
DEFAULT_ERASE_PROMPT = "the empty background scene, with nothing in front of it"


class Flux2KleinEditor(PipelineBackend):
    """FLUX.2-klein as the image editor (edit and erase).

    Options: the common ones (``model_id`` default ``black-forest-labs/FLUX.2-klein-9B``, ``steps`` 4 and
    ``guidance`` 1.0 as the distilled checkpoint's card; ``resolution`` = pixel budget, default 1024*1024,
    the pipeline's own limit for reference images) plus ``strength`` (erase: 1.0 repaints the masked
    region from noise), ``erase_prompt``, ``composite`` (erase: keep every pixel outside the mask exactly;
    without it the VAE round trip softens the whole frame), ``max_sequence_length`` and
    ``text_encoder_out_layers`` (the Qwen3 hidden layers FLUX.2 reads; the tiny encoder has fewer).
    """

    resources: ClassVar[Resources] = Resources(num_gpus=1.0, num_cpus=2.0, gpu_memory_gb=40.0)
    option_keys: ClassVar[tuple[str, ...]] = (
        *COMMON_OPTION_KEYS,
        "strength",
        "erase_prompt",
        "composite",
        "max_sequence_length",
        "text_encoder_out_layers",
    )
    default_model_id: ClassVar[str] = "black-forest-labs/FLUX.2-klein-9B"
    tiny_settings: ClassVar[Mapping[str, Any]] = {
        "steps": 2,
        "resolution": 64 * 96,
        "max_sequence_length": 32,
        "text_encoder_out_layers": (1, 2, 3),
    }

    def __init__(
        self,
        edit_pipeline: Any,
        *,
        steps: int = 4,
        guidance: float = 1.0,
        resolution: int = 1024 * 1024,
        strength: float = 1.0,
        erase_prompt: str = DEFAULT_ERASE_PROMPT,
        composite: bool = True,
        max_sequence_length: int = 512,
        text_encoder_out_layers: tuple[int, ...] = (9, 18, 27),
    ) -> None:
        from diffusers import Flux2KleinInpaintPipeline

        self.edit_pipeline = edit_pipeline
        self.inpaint_pipeline = Flux2KleinInpaintPipeline.from_pipe(edit_pipeline)
        for pipe in (self.edit_pipeline, self.inpaint_pipeline):
            pipe.set_progress_bar_config(disable=True)
        self.steps = int(steps)
        self.guidance = float(guidance)
        self.resolution = int(resolution)
        self.strength = float(strength)
        self.erase_prompt = erase_prompt
        self.composite = bool(composite)
        self.max_sequence_length = int(max_sequence_length)
        self.text_encoder_out_layers = tuple(int(i) for i in text_encoder_out_layers)
        # the pipeline works in multiples of 2 * VAE scale (latents are packed 2x2)
        self.multiple = edit_pipeline.vae_scale_factor * 2

    # -- construction -------------------------------------------------------------------------------
    @classmethod
    def load_pipeline(cls, model_id: str, dtype: Any) -> Any:
        from diffusers import Flux2KleinPipeline

        return Flux2KleinPipeline.from_pretrained(model_id, dtype=dtype)

    @classmethod
    def tiny_pipeline(cls, seed: int) -> Any:
        """Random weights, tiny configuration, same classes (a step takes about a second on a CPU)."""
        return tiny_flux2_klein_pipeline(seed)

    # -- role ---------------------------------------------------------------------------------------
    def working_size(self, height: int, width: int) -> tuple[int, int]:
        """The size the model runs at: the picture's aspect within ``resolution``, at least 64 pixels a side."""
        return fit_size(height, width, self.resolution, self.multiple, min_side=64)

    def _common_kwargs(self, seed: int) -> dict[str, Any]:
        return {
            "num_inference_steps": self.steps,
            "guidance_scale": self.guidance,
            "generator": generator(seed),
            "max_sequence_length": self.max_sequence_length,
            "text_encoder_out_layers": self.text_encoder_out_layers,
            "output_type": "np",
        }

    def edit(self, image: np.ndarray, prompt: str, *, seed: int = 0) -> np.ndarray:
        """``image`` edited by ``prompt``, at ``image``'s size (``uint8``)."""
        height, width = np.asarray(image).shape[:2]
        h, w = self.working_size(height, width)
        reference = to_pil(resize_image(image, h, w))
        out = self.edit_pipeline(
            image=reference, prompt=prompt, height=h, width=w, **self._common_kwargs(seed)
        )
        return resize_image(float_to_uint8(out.images[0]), height, width)

    def erase(self, image: np.ndarray, mask: np.ndarray, *, prompt: str = "", seed: int = 0) -> np.ndarray:
        """``image`` with what ``mask`` covers painted over with background, at ``image``'s size."""
        arr = np.asarray(image)
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != arr.shape[:2]:
            raise ValueError(f"mask {mask.shape} does not match image {arr.shape[:2]}")
        if not mask.any():
            return arr.copy()
        height, width = arr.shape[:2]
        h, w = self.working_size(height, width)
        small_mask = np.asarray(
            mask_to_pil(mask).resize((w, h))
        )  # bilinear: soft edges widen the hole a little
        out = self.inpaint_pipeline(
            image=to_pil(resize_image(arr, h, w)),
            mask_image=mask_to_pil(small_mask > 0),
            prompt=prompt or self.erase_prompt,
            height=h,
            width=w,
            strength=self.strength,
            **self._common_kwargs(seed),
        )
        result = resize_image(float_to_uint8(out.images[0]), height, width)
        if self.composite:
            result = np.where(mask[..., None], result, arr)
        return result


def tiny_flux2_klein_pipeline(seed: int = 0) -> Any:
    """A ``Flux2KleinPipeline`` with random weights and a tiny configuration, built offline.

    The Qwen3 text encoder has 3 layers (so ``text_encoder_out_layers=(1, 2, 3)``) and 16 channels; the
    transformer's text width is 3 * 16; the VAE has 4 latent channels (16 after 2x2 packing).
    """
    import torch
    from diffusers import (
        AutoencoderKLFlux2,
        FlowMatchEulerDiscreteScheduler,
        Flux2KleinPipeline,
        Flux2Transformer2DModel,
    )
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    tokenizer = tiny_chat_tokenizer()
    text_encoder = Qwen3ForCausalLM(
        Qwen3Config(
            vocab_size=len(tokenizer),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=3,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=8,
            max_position_embeddings=512,
        )
    )
    transformer = Flux2Transformer2DModel(
        patch_size=1,
        in_channels=16,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=48,
        timestep_guidance_channels=32,
        axes_dims_rope=(4, 4, 4, 4),
        guidance_embeds=False,
    )
    vae = AutoencoderKLFlux2(
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=32,
    )
    pipe = Flux2KleinPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
        is_distilled=True,
    )
    return eval_mode(pipe)
