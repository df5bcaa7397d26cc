//! `Text2ImUNet` (`glide_text2im/text2im_model.py` on top of `unet.py`): the ADM UNet whose
//! timestep embedding is shifted by a projection of the caption (`xf_proj`) and whose attention
//! layers attend to the whole caption sequence (`xf_out`).

use crate::silu::silu;
use burn::module::{Module, Param};
use burn::nn::conv::Conv2d;
use burn::nn::{
    Embedding, EmbeddingConfig, GroupNorm, GroupNormConfig, Initializer, LayerNorm,
    LayerNormConfig, Linear, LinearConfig,
};
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::{Bool, Int, Tensor, backend::Backend};

use crate::GlideConfig;
use crate::attention::AttentionBlock;
use crate::group_norm::group_norm_silu;
use crate::half::{f32_val, widened};
use crate::resblock::{ResBlock, ResBlockSpec, conv3x3};
use crate::xf::Transformer;

/// One layer of a `TimestepEmbedSequential`.
// A few dozen layers per model: boxing the variants would buy nothing and burn's derive wants
// the modules inline.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Layer<B: Backend> {
    Conv(Conv2d<B>),
    Res(ResBlock<B>),
    Attn(AttentionBlock<B>),
}

/// `TimestepEmbedSequential`: layers that take the embedding and the text where they need them.
pub type TimestepBlock<B> = Vec<Layer<B>>;

fn run_block<B: Backend>(
    block: &TimestepBlock<B>,
    mut h: Tensor<B, 4>,
    emb: &Tensor<B, 2>,
    xf_out: &Tensor<B, 3>,
) -> Tensor<B, 4> {
    // One block's parameters in f32 at a time when the model is held in f16 (crate::half).
    for layer in widened(block).iter() {
        h = match layer {
            Layer::Conv(conv) => crate::conv::conv2d(conv, h),
            Layer::Res(res) => res.forward(h, emb),
            Layer::Attn(attn) => attn.forward(h, Some(xf_out)),
        };
    }
    h
}

/// `time_embed`: linear → SiLU → linear (original keys `time_embed.0`, `time_embed.2`).
#[derive(Module, Debug)]
pub struct TimeEmbed<B: Backend> {
    pub linear_1: Linear<B>,
    pub linear_2: Linear<B>,
}

/// The caption encoded once per prompt: reused at every sampling step.
#[derive(Debug, Clone)]
pub struct TextEmb<B: Backend> {
    /// `[B, 4·model_channels]`: added to the timestep embedding.
    pub xf_proj: Tensor<B, 2>,
    /// `[B, xf_width, text_ctx]`: keys/values for every attention layer.
    pub xf_out: Tensor<B, 3>,
}

impl<B: Backend> TextEmb<B> {
    /// Concatenates along the batch (e.g. `[cond; uncond]` for guidance).
    pub fn cat(parts: Vec<Self>) -> Self {
        let (p, o): (Vec<_>, Vec<_>) = parts.into_iter().map(|t| (t.xf_proj, t.xf_out)).unzip();
        Self {
            xf_proj: Tensor::cat(p, 0),
            xf_out: Tensor::cat(o, 0),
        }
    }

    /// Repeats each of the B entries `n` times in place (`[a, b]` → `[a, a, b, b]` for n = 2).
    pub fn repeat_interleave(self, n: usize) -> Self {
        let [b, d] = self.xf_proj.dims();
        let [_, w, l] = self.xf_out.dims();
        Self {
            xf_proj: self
                .xf_proj
                .reshape([b, 1, d])
                .expand([b, n, d])
                .reshape([b * n, d]),
            xf_out: self
                .xf_out
                .reshape([b, 1, w, l])
                .expand([b, n, w, l])
                .reshape([b * n, w, l]),
        }
    }
}

/// Extra input channels of the inpainting and super-resolution variants, prepared once per image.
#[derive(Debug, Clone, Default)]
pub struct ImageCond<B: Backend> {
    /// `[B, k, H, W]`, concatenated after x_t.
    pub channels: Option<Tensor<B, 4>>,
}

impl<B: Backend> ImageCond<B> {
    /// No extra channels (plain text-to-image).
    pub fn none() -> Self {
        Self { channels: None }
    }

    /// Builds the extra channels in the original order: inpainting `[image·mask, mask]` (mask
    /// 1 = keep), then super-resolution `[bilinear(low_res)]` (`align_corners=False`).
    pub fn new(
        inpaint: Option<(Tensor<B, 4>, Tensor<B, 4>)>,
        low_res: Option<Tensor<B, 4>>,
        image_size: usize,
    ) -> Self {
        let mut parts = Vec::new();
        if let Some((image, mask)) = inpaint {
            parts.push(image * mask.clone());
            parts.push(mask);
        }
        if let Some(low) = low_res {
            parts.push(interpolate(
                low,
                [image_size, image_size],
                InterpolateOptions::new(InterpolateMode::Bilinear).with_align_corners(false),
            ));
        }
        Self {
            channels: (!parts.is_empty()).then(|| Tensor::cat(parts, 1)),
        }
    }

    /// Repeats along the batch, `[a, b]` → `[a, b, a, b]` (the guidance batch `[cond; uncond]`).
    pub fn repeat(&self, n: usize) -> Self {
        Self {
            channels: self.channels.as_ref().map(|c| c.clone().repeat_dim(0, n)),
        }
    }
}

/// `timestep_embedding(timesteps, dim)`: [cos(t·f), sin(t·f)], f_i = 10000^(−i/half), computed in
/// f32 in the original's order.
///
/// # Shapes
/// - timesteps: `[B]` → `[B, dim]`
pub fn timestep_embedding<B: Backend>(timesteps: Tensor<B, 1>, dim: usize) -> Tensor<B, 2> {
    let half = dim / 2;
    let ln = -(10000f64.ln() as f32);
    let freqs: Vec<f32> = (0..half)
        .map(|i| ((ln * i as f32) / half as f32).exp())
        .collect();
    let device = timesteps.device();
    let freqs = Tensor::<B, 1>::from_floats(freqs.as_slice(), &device).reshape([1, half]);
    let b = timesteps.dims()[0];
    let args = timesteps.reshape([b, 1]) * freqs;
    let emb = Tensor::cat(vec![args.clone().cos(), args.sin()], 1);
    if dim % 2 == 1 {
        Tensor::cat(vec![emb, Tensor::zeros([b, 1], &device)], 1)
    } else {
        emb
    }
}

/// w is multiplied by this before its sinusoidal embedding (w ∈ [0, 8] → [0, 800], the range
/// the timestep embedding was designed for).
pub const GUIDANCE_EMBED_SCALE: f64 = 100.0;

/// GLIDE's text-conditional UNet; `inpaint` / `super_res` in the config add input channels.
#[derive(Module, Debug)]
pub struct Text2ImUNet<B: Backend> {
    pub token_embedding: Embedding<B>,
    pub positional_embedding: Param<Tensor<B, 2>>,
    pub padding_embedding: Option<Param<Tensor<B, 2>>>,
    pub transformer: Transformer<B>,
    pub final_ln: Option<LayerNorm<B>>,
    pub transformer_proj: Linear<B>,
    pub time_embed: TimeEmbed<B>,
    /// Distilled students: the embedding of the guidance weight w (same layout as `time_embed`,
    /// last layer zero-initialised so a new student starts as its teacher).
    pub guidance_embed: Option<TimeEmbed<B>>,
    pub input_blocks: Vec<TimestepBlock<B>>,
    pub middle_block: TimestepBlock<B>,
    pub output_blocks: Vec<TimestepBlock<B>>,
    pub out_norm: GroupNorm<B>,
    pub out_conv: Conv2d<B>,
    pub model_channels: usize,
    pub image_size: usize,
}

impl GlideConfig {
    /// Builds the model with burn's default initialisers; like the original (`zero_module`), the
    /// last layer of every residual branch (ResBlock `out_layers`, attention `proj_out`) and the
    /// output convolution start at zero, so a fresh model predicts eps ≡ 0 (see
    /// [`crate::weights::fixture_style_init`] for non-zero random weights).
    pub fn init<B: Backend>(&self, device: &B::Device) -> Text2ImUNet<B> {
        Text2ImUNet::new(self, device)
    }
}

impl<B: Backend> Text2ImUNet<B> {
    fn new(cfg: &GlideConfig, device: &B::Device) -> Self {
        let mc = cfg.num_channels;
        let time_embed_dim = mc * 4;
        let channel_mult = cfg.channel_mult();
        let attention_ds = cfg.attention_ds();
        let enc = Some(cfg.xf_width);
        let heads_up = cfg.num_heads_upsample.unwrap_or(cfg.num_heads);
        let res = |channels, out_channels, up, down| {
            Layer::Res(ResBlock::new(
                ResBlockSpec {
                    channels,
                    emb_channels: time_embed_dim,
                    out_channels,
                    dropout: cfg.dropout,
                    use_scale_shift_norm: cfg.use_scale_shift_norm,
                    up,
                    down,
                },
                device,
            ))
        };
        let attn = |channels, heads| {
            Layer::Attn(AttentionBlock::new(
                channels,
                heads,
                cfg.num_head_channels,
                enc,
                device,
            ))
        };
        assert!(
            cfg.resblock_updown,
            "only resblock_updown = true (GLIDE's setting) is implemented"
        );

        let mut ch = channel_mult[0] * mc;
        let input_ch = ch;
        let mut input_blocks = vec![vec![Layer::Conv(conv3x3(cfg.in_channels(), ch, device))]];
        let mut input_block_chans = vec![ch];
        let mut ds = 1;
        for (level, &mult) in channel_mult.iter().enumerate() {
            for _ in 0..cfg.num_res_blocks {
                let mut layers = vec![res(ch, mult * mc, false, false)];
                ch = mult * mc;
                if attention_ds.contains(&ds) {
                    layers.push(attn(ch, cfg.num_heads));
                }
                input_blocks.push(layers);
                input_block_chans.push(ch);
            }
            if level != channel_mult.len() - 1 {
                input_blocks.push(vec![res(ch, ch, false, true)]);
                input_block_chans.push(ch);
                ds *= 2;
            }
        }
        let middle_block = vec![
            res(ch, ch, false, false),
            attn(ch, cfg.num_heads),
            res(ch, ch, false, false),
        ];
        let mut output_blocks = Vec::new();
        for (level, &mult) in channel_mult.iter().enumerate().rev() {
            for i in 0..=cfg.num_res_blocks {
                let ich = input_block_chans.pop().expect("one skip per input block");
                let mut layers = vec![res(ch + ich, mc * mult, false, false)];
                ch = mc * mult;
                if attention_ds.contains(&ds) {
                    layers.push(attn(ch, heads_up));
                }
                if level > 0 && i == cfg.num_res_blocks {
                    layers.push(res(ch, ch, true, false));
                    ds /= 2;
                }
                output_blocks.push(layers);
            }
        }
        let w = cfg.xf_width;
        let randn = |shape: [usize; 2]| {
            Initializer::Normal {
                mean: 0.0,
                std: 0.01,
            }
            .init(shape, device)
        };
        Self {
            token_embedding: EmbeddingConfig::new(cfg.n_vocab, w).init(device),
            positional_embedding: randn([cfg.text_ctx, w]),
            padding_embedding: cfg.xf_padding.then(|| randn([cfg.text_ctx, w])),
            transformer: Transformer::new(w, cfg.xf_layers, cfg.xf_heads, device),
            final_ln: cfg
                .xf_final_ln
                .then(|| LayerNormConfig::new(w).init(device)),
            transformer_proj: LinearConfig::new(w, time_embed_dim).init(device),
            time_embed: TimeEmbed {
                linear_1: LinearConfig::new(mc, time_embed_dim).init(device),
                linear_2: LinearConfig::new(time_embed_dim, time_embed_dim).init(device),
            },
            guidance_embed: cfg.guidance_embed.then(|| TimeEmbed {
                linear_1: LinearConfig::new(mc, time_embed_dim).init(device),
                linear_2: LinearConfig::new(time_embed_dim, time_embed_dim)
                    .with_initializer(Initializer::Zeros)
                    .init(device),
            }),
            input_blocks,
            middle_block,
            output_blocks,
            out_norm: GroupNormConfig::new(32, ch).init(device),
            // zero_module: a fresh model predicts exactly zero.
            out_conv: crate::resblock::zero_conv3x3(input_ch, cfg.out_channels(), device),
            model_channels: mc,
            image_size: cfg.image_size,
        }
    }

    /// `get_text_emb`: token + positional embeddings, learned padding embeddings where the mask is
    /// false, the transformer, `final_ln`; `xf_proj` projects the last position.
    ///
    /// # Shapes
    /// - tokens: `[B, text_ctx]`, mask: `[B, text_ctx]` (true = real token)
    pub fn encode_text(&self, tokens: Tensor<B, 2, Int>, mask: Tensor<B, 2, Bool>) -> TextEmb<B> {
        let [b, l] = tokens.dims();
        let mut xf_in = widened(&self.token_embedding).forward(tokens)
            + f32_val(&self.positional_embedding).unsqueeze_dim::<3>(0);
        let w = xf_in.dims()[2];
        if let Some(pad) = &self.padding_embedding {
            let keep = mask.reshape([b, l, 1]).expand([b, l, w]);
            xf_in = f32_val(pad)
                .unsqueeze_dim::<3>(0)
                .expand([b, l, w])
                .mask_where(keep, xf_in);
        }
        let mut xf_out = self.transformer.forward(xf_in);
        if let Some(ln) = &self.final_ln {
            xf_out = widened(ln).forward(xf_out);
        }
        let last = xf_out.clone().narrow(1, l - 1, 1).reshape([b, w]);
        TextEmb {
            xf_proj: widened(&self.transformer_proj).forward(last),
            xf_out: xf_out.swap_dims(1, 2),
        }
    }

    /// The UNet given an already encoded caption.
    ///
    /// # Shapes
    /// - x: `[B, 3, H, W]`, timesteps: `[B]` (original 0..999 timesteps, as floats)
    /// - text: `[B, …]`, cond.channels: `[B, k, H, W]`
    /// - output: `[B, 6, H, W]` (ε or v as the config's `predict_v` says, variance values)
    pub fn forward_with_text(
        &self,
        x: Tensor<B, 4>,
        timesteps: Tensor<B, 1>,
        text: &TextEmb<B>,
        cond: &ImageCond<B>,
    ) -> Tensor<B, 4> {
        self.forward_with_guidance_weight(x, timesteps, text, cond, None)
    }

    /// [`Self::forward_with_text`] for a distilled student: `guidance` is w = s − 1 per row,
    /// embedded as `timestep_embedding(w · 100)` through `guidance_embed` and added to the
    /// timestep embedding. Ignored by models without `guidance_embed`.
    ///
    /// # Shapes
    /// - guidance: `[B]`
    pub fn forward_with_guidance_weight(
        &self,
        x: Tensor<B, 4>,
        timesteps: Tensor<B, 1>,
        text: &TextEmb<B>,
        cond: &ImageCond<B>,
        guidance: Option<Tensor<B, 1>>,
    ) -> Tensor<B, 4> {
        let emb = timestep_embedding(timesteps, self.model_channels);
        let time_embed = widened(&self.time_embed);
        let mut emb = time_embed
            .linear_2
            .forward(silu(time_embed.linear_1.forward(emb)));
        if let (Some(g), Some(w)) = (&self.guidance_embed, guidance) {
            let g = widened(g);
            let w = timestep_embedding(w * GUIDANCE_EMBED_SCALE, self.model_channels);
            emb = emb + g.linear_2.forward(silu(g.linear_1.forward(w)));
        }
        let emb = emb + text.xf_proj.clone();
        let mut h = match &cond.channels {
            Some(c) => Tensor::cat(vec![x, c.clone()], 1),
            None => x,
        };
        let mut hs = Vec::with_capacity(self.input_blocks.len());
        for block in &self.input_blocks {
            h = run_block(block, h, &emb, &text.xf_out);
            hs.push(h.clone());
        }
        h = run_block(&self.middle_block, h, &emb, &text.xf_out);
        for block in &self.output_blocks {
            let skip = hs.pop().expect("one skip per output block");
            h = run_block(block, cat_channels(h, skip), &emb, &text.xf_out);
        }
        let h = group_norm_silu(&widened(&self.out_norm), h, None);
        crate::conv::conv2d(&widened(&self.out_conv), h)
    }

    /// Encodes the caption and runs the UNet (the original `forward`).
    pub fn forward(
        &self,
        x: Tensor<B, 4>,
        timesteps: Tensor<B, 1>,
        tokens: Tensor<B, 2, Int>,
        mask: Tensor<B, 2, Bool>,
        cond: &ImageCond<B>,
    ) -> Tensor<B, 4> {
        let text = self.encode_text(tokens, mask);
        self.forward_with_text(x, timesteps, &text, cond)
    }
}

/// `cat([h, skip], 1)` at a skip connection: an op of its own with contiguous gradients when
/// training on the CPU ([`crate::cat_cpu`]).
///
/// # Shapes
/// - h: `[B, C1, H, W]`, skip: `[B, C2, H, W]` → `[B, C1 + C2, H, W]`
fn cat_channels<B: Backend>(h: Tensor<B, 4>, skip: Tensor<B, 4>) -> Tensor<B, 4> {
    #[cfg(not(target_arch = "wasm32"))]
    if crate::cat_cpu::applies(&h) && crate::cat_cpu::applies(&skip) {
        return crate::cat_cpu::cat_channels(h, skip);
    }
    Tensor::cat(vec![h, skip], 1)
}
