"""WaveCL: the whole network, wired module by module (docs/architecture.md).

Attribute names are those of the original implementation, so that its checkpoints load with the
renames of :func:`wavecl.original.convert_state_dict` only (through :func:`wavecl.model.weights.load_weights`).

The forward pass splits in two: :meth:`WaveCL.encode_video` (the backbone and everything else that
does not see the text) and :meth:`WaveCL.segment` (the text-conditioned part, for sentences encoded by
:meth:`WaveCL.encode_sentences`), so that several sentences about one clip share one backbone pass.
:meth:`WaveCL.forward` runs the three for one sentence per clip.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
import transformers
from einops import rearrange
from torch import Tensor, nn

from wavecl.amp import float32_norms
from wavecl.config import ModelConfig
from wavecl.inference_settings import InferenceSettings
from wavecl.model.backbone import VideoSwinBackbone, load_video_swin_weights
from wavecl.model.deformable import DeformableOutput, DeformableTransformer
from wavecl.model.features import EncodedSentences, VisualFeatures
from wavecl.model.fusion import MultimodalFusion
from wavecl.model.heads import MLP, FPNSpatialDecoder, dynamic_mask_logits, dynamic_param_count
from wavecl.model.linear import onednn_linears
from wavecl.model.output import WaveCLOutput
from wavecl.model.position import sine_position_1d, sine_position_2d
from wavecl.model.pretrained import PretrainedMixin
from wavecl.model.sep import SemanticEntityPerception
from wavecl.model.text import (
    FeatureResizer,
    check_sentence_lengths,
    encode_tokens,
    load_text_encoder,
    masked_mean,
    max_text_tokens,
    tokens_on,
)
from wavecl.model.voc import VideoObjectCluster
from wavecl.model.wip import FocusedLinearAttention, wavelet_gate

# Levels 0-2 come from backbone stages 1-3; level 3 is an extra stride-2 conv on stage 3.
NUM_WAVELET_LEVELS = 2
LVF_LEVEL = 2


def resize_mask(mask: Tensor, size: tuple[int, int]) -> Tensor:
    """Nearest-resize a padding mask ``[N, H, W]`` bool to ``[N, h, w]``."""
    return F.interpolate(mask[None].float(), size=size).bool()[0]


def _check_clips(frames: Tensor, pad_mask: Tensor) -> None:
    """Raise ``ValueError`` unless ``frames`` is ``[T, B, 3, H, W]`` and ``pad_mask`` ``[T, B, H, W]``."""
    if frames.dim() != 5 or frames.shape[2] != 3:
        raise ValueError(f"frames must be [T, B, 3, H, W], got {tuple(frames.shape)}")
    T, B, _, H, W = frames.shape
    if tuple(pad_mask.shape) != (T, B, H, W):
        raise ValueError(f"pad_mask must be [T, B, H, W] = {(T, B, H, W)}, got {tuple(pad_mask.shape)}")


class WaveCL(PretrainedMixin, nn.Module):
    """Referring video object segmentation with wavelet calibration.

    Args:
        config: the network configuration.
        text_encoder, tokenizer: a prebuilt Hugging Face encoder and its tokenizer; loaded from
            ``config.text_encoder`` when omitted.
        inference_settings: how :class:`~wavecl.inference.predictor.VideoPredictor` runs this model unless
            told otherwise (the defaults when ``None``); :meth:`from_pretrained` gives those recorded with
            the weights (:data:`~wavecl.inference_settings.RECORDED_SETTINGS`), :meth:`save_pretrained`
            records them.

    Raises:
        ValueError: only one of ``text_encoder`` and ``tokenizer`` is given.
    """

    def __init__(
        self,
        config: ModelConfig,
        text_encoder: transformers.PreTrainedModel | None = None,
        tokenizer: transformers.PreTrainedTokenizerBase | None = None,
        inference_settings: InferenceSettings | None = None,
    ) -> None:
        super().__init__()
        if (text_encoder is None) != (tokenizer is None):
            raise ValueError("give both text_encoder and tokenizer, or neither to load config.text_encoder")
        self.config = config
        self.inference_settings = InferenceSettings() if inference_settings is None else inference_settings
        d = config.d_model
        overrides = {
            "embed_dim": config.backbone_embed_dim,
            "depths": config.backbone_depths,
            "num_heads": config.backbone_num_heads,
            "window_size": config.backbone_window_size,
        }
        self.backbone = VideoSwinBackbone.from_name(
            config.backbone,
            drop_path=config.backbone_drop_path,
            activation_checkpointing=config.activation_checkpointing,
            **{
                key: tuple(value) if isinstance(value, list) else value
                for key, value in overrides.items()
                if value is not None
            },
        )
        if text_encoder is None or tokenizer is None:
            text_encoder, tokenizer = load_text_encoder(config.text_encoder)
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        if config.freeze_text_encoder:
            self.text_encoder.requires_grad_(False)
        elif config.sentence_pooling == "mean" and getattr(self.text_encoder, "pooler", None) is not None:
            # The masked mean never reads the pooler: it gets no gradient, so it is frozen (its weights
            # stay in the state dict). A trainable parameter without a gradient stops DDP.
            self.text_encoder.pooler.requires_grad_(False)
        text_dim = self.text_encoder.config.hidden_size
        self.txt_proj = FeatureResizer(text_dim, d, dropout=config.text_proj_dropout)

        channels = self.backbone.channels
        self.input_proj = nn.ModuleList(
            [nn.Sequential(nn.Conv2d(c, d, kernel_size=1), nn.GroupNorm(32, d)) for c in channels[1:]]
            + [nn.Sequential(nn.Conv2d(channels[-1], d, kernel_size=3, stride=2, padding=1), nn.GroupNorm(32, d))]
        )
        self.vlp_projs = nn.ModuleList(
            SemanticEntityPerception(text_dim, d, dropout=config.text_proj_dropout, pooling=config.sep_pooling)
            for _ in range(config.num_feature_levels)
        )
        self.convs = nn.ModuleList(nn.Conv2d(d, d, kernel_size=3, padding=1) for _ in range(NUM_WAVELET_LEVELS))
        self.vlf = MultimodalFusion(d, config.nheads)
        self.lvf = MultimodalFusion(d, config.nheads)
        self.wavelet_vlf_l = MultimodalFusion(d, config.nheads)
        self.wavelet_vlf_h = FocusedLinearAttention(d, config.nheads, token_order=config.fla_order)

        self.transformer = DeformableTransformer(
            d_model=d,
            num_heads=config.nheads,
            num_encoder_layers=config.enc_layers,
            num_decoder_layers=config.dec_layers,
            dim_feedforward=config.dim_feedforward,
            dropout=config.dropout,
            num_feature_levels=config.num_feature_levels,
            enc_n_points=config.enc_n_points,
            dec_n_points=config.dec_n_points,
            activation_checkpointing=config.activation_checkpointing,
        )
        self.query_embed = nn.Embedding(config.num_queries, d)
        self.class_embed = nn.ModuleList(nn.Linear(d, config.num_classes) for _ in range(config.dec_layers))
        self.bbox_embed = nn.ModuleList(MLP(d, d, 4, 3) for _ in range(config.dec_layers))
        self.voc = VideoObjectCluster(
            d_model=d,
            num_heads=config.nheads,
            num_queries=config.num_queries,
            num_encoder_layers=config.voc_enc_layers,
            num_decoder_layers=config.voc_dec_layers,
            dim_feedforward=config.voc_dim_feedforward,
            dropout=config.voc_dropout,
        )
        self.spatial_decoder = FPNSpatialDecoder(d, (d, d, channels[0]), config.mask_kernels_dim)
        num_params = dynamic_param_count(
            config.mask_kernels_dim + (2 if config.rel_coord else 0),
            config.dynamic_mask_channels,
            config.controller_layers,
        )
        self.controller = MLP(d, d, num_params, config.controller_layers)
        self._reset_parameters()
        float32_norms(self)
        onednn_linears(self)

    def _reset_parameters(self) -> None:
        # ModuleList items are typed Module: the casts name the layers __init__ builds.
        for proj in self.input_proj:
            conv = cast(nn.Conv2d, proj.get_submodule("0"))
            nn.init.xavier_uniform_(conv.weight, gain=1)
            nn.init.zeros_(cast(Tensor, conv.bias))
        prior = -math.log((1 - 0.01) / 0.01)
        for head in self.class_embed:
            nn.init.constant_(cast(nn.Linear, head).bias, prior)
        box_outputs = [cast(nn.Linear, cast(MLP, mlp).layers[-1]) for mlp in self.bbox_embed]
        for linear in box_outputs:
            nn.init.zeros_(linear.weight)
            nn.init.zeros_(linear.bias)
        nn.init.constant_(box_outputs[0].bias[2:], -2.0)
        for layer in self.controller.layers:
            linear = cast(nn.Linear, layer)
            nn.init.xavier_uniform_(linear.weight)
            nn.init.zeros_(linear.bias)

    def train(self, mode: bool = True) -> WaveCL:
        """Switch modes; a frozen text encoder always stays in eval mode (no dropout)."""
        super().train(mode)
        if self.config.freeze_text_encoder:
            self.text_encoder.eval()
        return self

    def _check_inputs(self, frames: Tensor, pad_mask: Tensor, texts: Sequence[str], image_sizes: Tensor) -> None:
        _check_clips(frames, pad_mask)
        B = frames.shape[1]
        if isinstance(texts, str) or len(texts) != B:
            count = "a single string" if isinstance(texts, str) else f"{len(texts)} sentences"
            raise ValueError(f"texts must hold one sentence per clip: batch has {B} clips, got {count}")
        if tuple(image_sizes.shape) != (B, 2):
            raise ValueError(f"image_sizes must be [B, 2] = {(B, 2)}, got {tuple(image_sizes.shape)}")

    def forward(
        self,
        frames: Tensor,
        pad_mask: Tensor,
        texts: Sequence[str],
        image_sizes: Tensor,
        valid_indices: Tensor | None = None,
    ) -> WaveCLOutput:
        """Segment the referred object in every frame: one sentence per clip.

        Equivalent to :meth:`encode_sentences`, :meth:`encode_video` and :meth:`segment` in turn
        (in that order, so random draws in training happen as they always did), with the batch's
        text padding counted by SEP's reference pooling as in the reference's batches
        (``pool_text_padding=True``). Several sentences about one clip are cheaper through those
        three: the clip then runs through the backbone once.

        Args:
            frames: ``[T, B, 3, H, W]`` normalised, zero-padded clips (time-major).
            pad_mask: ``[T, B, H, W]`` bool, True on padding.
            texts: ``B`` referring expressions.
            image_sizes: ``[B, 2]`` unpadded ``(H', W')`` of each clip; scales the mask head's
                relative coordinates.
            valid_indices: optional ``[B]`` long indices into the batch-major ``(b t)`` frames; when
                given, only those frames (one per clip, A2D/JHMDB) continue after the backbone and
                the output has ``T = 1``. The inputs are not modified.

        Returns:
            The last decoder layer's :class:`WaveCLOutput` (``eval_layer="last"``) or the reference's
            layer-0 output (``eval_layer="reference"``, eval mode only); in training mode
            ``aux_outputs`` holds the earlier layers.
        """
        self._check_inputs(frames, pad_mask, texts, image_sizes)
        sentences = self.encode_sentences(texts, frames.device)
        visual = self.encode_video(frames, pad_mask, valid_indices)
        return self.segment(visual, sentences, image_sizes, pool_text_padding=True)

    def check_sentences(self, texts: Sequence[str], names: Sequence[str]) -> None:
        """Refuse, before any work, a sentence longer than the text encoder accepts (tokenising only).

        Args:
            texts: the sentences.
            names: how the message names each one's source (``--text 2``, a dataset sample).

        Raises:
            ValueError: naming the first sentence that is too long, its token count and its start
                (:func:`wavecl.model.text.check_sentence_lengths`).
        """
        check_sentence_lengths(self.tokenizer, max_text_tokens(self.text_encoder), texts, names)

    def encode_sentences(self, texts: Sequence[str], device: torch.device) -> EncodedSentences:
        """Encode ``N`` referring expressions: :func:`~wavecl.model.text.tokenize_texts`, then
        :meth:`encode_tokens` on ``device``.

        Raises ``TypeError`` / ``ValueError`` for an empty or non-string sentence, or one too long for
        the text encoder.
        """
        return self.encode_tokens(*tokens_on(self.tokenizer, self.text_encoder, texts, device))

    def encode_tokens(self, input_ids: Tensor, attention_mask: Tensor) -> EncodedSentences:
        """The sentence part of the network on tokenised sentences: the text encoder and the sentence projection.

        The text encoder runs without gradients when it is frozen.

        Args:
            input_ids: ``[N, S]`` long token ids (:func:`~wavecl.model.text.tokenize_texts`).
            attention_mask: ``[N, S]`` 1 on tokens, 0 on padding.
        """
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.config.freeze_text_encoder):
            text = encode_tokens(self.text_encoder, input_ids, attention_mask, self.config.sentence_pooling)
        return EncodedSentences(
            text=text,
            sentence=self.txt_proj(text.sentence),
            positions=rearrange(sine_position_1d(text.pad_mask, self.config.d_model), "n s c -> s n c"),
        )

    def encode_video(self, frames: Tensor, pad_mask: Tensor, valid_indices: Tensor | None = None) -> VisualFeatures:
        """The text-independent part of the network: the backbone, ``input_proj``, masks and positions.

        Args:
            frames: ``[T, B, 3, H, W]`` normalised, zero-padded clips (time-major).
            pad_mask: ``[T, B, H, W]`` bool, True on padding.
            valid_indices: optional ``[B]`` long indices into the batch-major ``(b t)`` frames: only
                those frames (one per clip) are kept after the backbone, and the features have ``T = 1``.

        Returns:
            :class:`VisualFeatures` of the ``B`` clips.

        Raises:
            ValueError: malformed shapes, or ``valid_indices`` not selecting one frame per clip.
        """
        _check_clips(frames, pad_mask)
        T, B = frames.shape[:2]
        d = self.config.d_model
        features = self.backbone(rearrange(frames, "t b c h w -> b t c h w"))
        frame_mask = rearrange(pad_mask, "t b h w -> (b t) h w")
        if valid_indices is not None:
            if valid_indices.numel() != B:
                raise ValueError(f"valid_indices must select one frame per clip ({B}), got {valid_indices.numel()}")
            features = [f.index_select(0, valid_indices) for f in features]
            frame_mask = frame_mask.index_select(0, valid_indices)
            T = 1
        levels, masks, positions = [], [], []
        for level in range(self.config.num_feature_levels):
            x = self.input_proj[level](features[min(level + 1, len(features) - 1)])
            mask = resize_mask(frame_mask, tuple(x.shape[-2:]))
            levels.append(x)
            masks.append(mask)
            positions.append(sine_position_2d(mask, d // 2))
        return VisualFeatures(features[0], levels, masks, positions, num_frames=T, num_clips=B)

    def segment(
        self,
        visual: VisualFeatures,
        sentences: EncodedSentences,
        image_sizes: Tensor,
        clip_index: Tensor | None = None,
        pool_text_padding: bool = False,
    ) -> WaveCLOutput:
        """The text-conditioned part of the network: ``N`` sentences, each about one encoded clip.

        The visual features are repeated along the batch (``clip_index``) here, after the backbone,
        so ``N`` sentences about one clip cost one backbone pass.

        In eval mode each sentence's output equals :meth:`forward` on that sentence and its clip
        alone, within float rounding: with ``sep_pooling="reference"``, SEP's text context then pools
        each sentence over its own tokens (``pool_text_padding=False``), as the reference does for
        one expression per forward; ``pool_text_padding=True`` pools over the padding of the batch's
        longer sentences as well, as :meth:`forward` does for the reference's training batches.
        In training mode SEP's BatchNorm normalises over the ``N`` sentences: the outputs equal
        :meth:`forward`'s (with ``pool_text_padding=True``) on the batch whose clip ``n`` is clip
        ``clip_index[n]`` of ``visual``, not ``N`` separate single-sentence forwards.

        Args:
            visual: :class:`VisualFeatures` of ``B`` clips (from :meth:`encode_video`).
            sentences: ``N`` encoded sentences (from :meth:`encode_sentences`).
            image_sizes: ``[N, 2]`` unpadded ``(H', W')`` of each sentence's clip.
            clip_index: ``[N]`` long, the clip of each sentence, on any device (on the host its range
                check reads nothing back from a GPU); ``None`` pairs sentence ``n`` with clip ``n`` (then
                ``N`` must equal ``B``).
            pool_text_padding: see above; ignored with ``sep_pooling="masked"``.

        Returns:
            :class:`WaveCLOutput` with batch axis ``N`` (see :meth:`forward`).

        Raises:
            ValueError: ``clip_index`` or ``image_sizes`` do not fit ``N`` sentences and ``B`` clips.
        """
        N = sentences.sentence.shape[0]  # not len(): a symbolic size when exported to ONNX
        if clip_index is not None:
            visual = visual.select(clip_index)
        if visual.num_clips != N:
            raise ValueError(f"{N} sentences but {visual.num_clips} clips: pass clip_index to share clips")
        if tuple(image_sizes.shape) != (N, 2):
            raise ValueError(
                f"image_sizes must be [N, 2] = {(N, 2)} (one row per sentence), got {tuple(image_sizes.shape)}"
            )
        T, B = visual.num_frames, N
        text = sentences.text
        srcs = []
        text_sentence_feature: Tensor | None = None
        for level, (x, mask, pos) in enumerate(zip(visual.levels, visual.masks, visual.positions)):
            h, w = x.shape[-2:]
            tokens = rearrange(x, "(b t) c h w -> (t h w) b c", b=B)
            token_mask = rearrange(mask, "(b t) h w -> b (t h w)", b=B)
            words = self.vlp_projs[level](tokens, token_mask, text.words, text.pad_mask, pool_text_padding)
            fused = self.vlf(tokens, words, memory_key_padding_mask=text.pad_mask, pos=sentences.positions)
            fused = rearrange(fused, "(t h w) b c -> (b t) c h w", t=T, h=h, w=w)
            if level < NUM_WAVELET_LEVELS:
                gate = wavelet_gate(x, sentences.sentence, T, self.wavelet_vlf_l, self.wavelet_vlf_h)
                fused = F.leaky_relu(self.convs[level](fused * gate.sigmoid()))
            if level == LVF_LEVEL:
                token_pos = rearrange(pos, "(b t) c h w -> (t h w) b c", b=B)
                language = self.lvf(words, tokens, memory_key_padding_mask=token_mask, pos=token_pos)
                text_sentence_feature = masked_mean(rearrange(language, "s b c -> b s c"), text.pad_mask)
            srcs.append(fused)
        if text_sentence_feature is None:
            raise ValueError(f"visual features need more than {LVF_LEVEL} levels, got {len(visual.levels)}")

        decoded = self.transformer(srcs, visual.masks, visual.positions, self.query_embed.weight, self.bbox_embed)
        hs = rearrange(decoded.hs, "l (b t) q c -> l t b q c", b=B)
        video_queries = self.voc(hs, sentences.sentence)
        mask_features = self.spatial_decoder(decoded.memory[2], [decoded.memory[1], decoded.memory[0], visual.stride4])
        mask_features = rearrange(mask_features, "(b t) c h w -> b t c h w", b=B)

        num_layers = hs.shape[0]
        if self.training:
            layers = [(layer, layer) for layer in range(num_layers)]
        elif self.config.eval_layer == "reference":
            layers = [(0, 0)]
        else:
            layers = [(num_layers - 1, 0)]
        outputs = [
            self._layer_output(
                layer,
                hs[layer],
                video_queries[voc_layer],
                decoded,
                mask_features,
                image_sizes,
                B,
                text_sentence_feature,
            )
            for layer, voc_layer in layers
        ]
        final = outputs[-1]
        final.aux_outputs = outputs[:-1]
        return final

    def _layer_output(
        self,
        layer: int,
        frame_queries: Tensor,
        video_queries: Tensor,
        decoded: DeformableOutput,
        mask_features: Tensor,
        image_sizes: Tensor,
        batch_size: int,
        text_sentence_feature: Tensor,
    ) -> WaveCLOutput:
        """Heads of one decoder layer: frame queries ``[T, B, Q, C]`` plus video queries ``[B, Q, C]``."""
        queries = frame_queries + video_queries[None]
        reference = decoded.init_reference if layer == 0 else decoded.inter_references[layer - 1]
        reference = rearrange(reference, "(b t) q d -> t b q d", b=batch_size)
        delta = self.bbox_embed[layer](queries)
        if reference.shape[-1] == 4:
            boxes = (delta + torch.logit(reference, eps=1e-5)).sigmoid()
        else:
            boxes = torch.cat([delta[..., :2] + torch.logit(reference, eps=1e-5), delta[..., 2:]], dim=-1).sigmoid()
        centres = rearrange(decoded.inter_references[layer][..., :2], "(b t) q d -> b t q d", b=batch_size)
        masks = dynamic_mask_logits(
            mask_features,
            rearrange(self.controller(queries), "t b q p -> b t q p"),
            centres.detach(),
            image_sizes,
            rel_coord=self.config.rel_coord,
            channels=self.config.dynamic_mask_channels,
            num_layers=self.config.controller_layers,
        )
        return WaveCLOutput(
            pred_masks=rearrange(masks, "b t q h w -> t b q h w"),
            pred_cls=self.class_embed[layer](queries),
            pred_boxes=boxes,
            video_queries=video_queries,
            text_sentence_feature=text_sentence_feature,
        )


def build_model(config: ModelConfig) -> WaveCL:
    """Build WaveCL and load the pretrained Video-Swin weights named by the config, if any."""
    model = WaveCL(config)
    if config.backbone_pretrained_path:
        load_video_swin_weights(model.backbone, config.backbone_pretrained_path)
    return model
