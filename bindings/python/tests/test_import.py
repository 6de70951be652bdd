"""Importing pretrained encoders: for each naming scheme, a small random model is written with
numpy in that scheme's own names (safetensors, plus its config file), imported, and its
embeddings compared with an independent numpy forward of that scheme's semantics (written from
the schemes' reference code: timm's VisionTransformer, OpenCLIP's VisionTransformer, Hugging
Face's CLIPVisionTransformer and Dinov2Model), followed by the imported LIFT head."""
import json

import numpy as np
import pytest
from safetensors.numpy import save_file
from scipy.special import erf

import liblift

W, HEADS, PATCH, SIZE, DEPTH, HIDDEN, TEXT = 32, 2, 4, 16, 2, 64, 8
GRID = SIZE // PATCH
N = GRID * GRID


# ------------------------------------------------------------------------------------------
# numpy building blocks (float64)

def layer_norm(x, weight, bias, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def gelu(x):
    return 0.5 * x * (1 + erf(x / np.sqrt(2)))


def quick_gelu(x):
    return x / (1 + np.exp(-1.702 * x))


def attention(x, wq, bq, wk, bk, wv, bv, wo, bo, heads):
    """Multi-head self-attention over (T, W) tokens, scale head_dim^-0.5, no mask."""
    t, w = x.shape
    hd = w // heads
    q, k, v = [(x @ wt.T + b).reshape(t, heads, hd).transpose(1, 0, 2) for wt, b in ((wq, bq), (wk, bk), (wv, bv))]
    s = q @ k.transpose(0, 2, 1) / np.sqrt(hd)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    o = (p @ v).transpose(1, 0, 2).reshape(t, w)
    return o @ wo.T + bo


def patches(image, weight, bias=None):
    """Conv2d(stride = kernel = PATCH) of a (C, S, S) image: (N, W) patch tokens, row-major."""
    c = image.shape[0]
    cols = image.reshape(c, GRID, PATCH, GRID, PATCH).transpose(1, 3, 0, 2, 4).reshape(N, c * PATCH * PATCH)
    out = cols @ weight.reshape(weight.shape[0], -1).T
    return out if bias is None else out + bias


def lift_head(model, feature):
    """The imported model's LIFT head (Linear, then GELU + Linear per extra layer), normalised."""
    sd = model.state_dict()
    x = feature @ sd["mlp_projector.projector.0.weight"].astype(np.float64).T + sd["mlp_projector.projector.0.bias"]
    layer = 2
    while f"mlp_projector.projector.{layer}.weight" in sd:
        x = gelu(x) @ sd[f"mlp_projector.projector.{layer}.weight"].astype(np.float64).T + sd[f"mlp_projector.projector.{layer}.bias"]
        layer += 2
    return x / np.linalg.norm(x)


def rand(rng, *shape, scale=0.3):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def near_one(rng, *shape):
    return (1 + rng.standard_normal(shape) * 0.1).astype(np.float32)


# ------------------------------------------------------------------------------------------
# The schemes: writer of random weights + independent forward

def timm_weights(rng, registers, embed_class, layer_scale, fc_norm):
    sd = {"patch_embed.proj.weight": rand(rng, W, 3, PATCH, PATCH), "patch_embed.proj.bias": rand(rng, W),
          "cls_token": rand(rng, 1, 1, W),
          "pos_embed": rand(rng, 1, N + (1 + registers if embed_class else 0), W),
          "head.weight": rand(rng, 10, W), "head.bias": rand(rng, 10)}
    if registers:
        sd["reg_token"] = rand(rng, 1, registers, W)
    for i in range(DEPTH):
        p = f"blocks.{i}."
        sd |= {p + "norm1.weight": near_one(rng, W), p + "norm1.bias": rand(rng, W),
               p + "attn.qkv.weight": rand(rng, 3 * W, W), p + "attn.qkv.bias": rand(rng, 3 * W),
               p + "attn.proj.weight": rand(rng, W, W), p + "attn.proj.bias": rand(rng, W),
               p + "norm2.weight": near_one(rng, W), p + "norm2.bias": rand(rng, W),
               p + "mlp.fc1.weight": rand(rng, HIDDEN, W), p + "mlp.fc1.bias": rand(rng, HIDDEN),
               p + "mlp.fc2.weight": rand(rng, W, HIDDEN), p + "mlp.fc2.bias": rand(rng, W)}
        if layer_scale:
            sd |= {p + "ls1.gamma": near_one(rng, W), p + "ls2.gamma": near_one(rng, W)}
    norm = "fc_norm" if fc_norm else "norm"
    sd |= {norm + ".weight": near_one(rng, W), norm + ".bias": rand(rng, W)}
    return sd


def timm_forward(sd, image, registers, embed_class, fc_norm, eps=1e-6):
    """timm VisionTransformer.forward_features + pool + fc_norm (pre-logits)."""
    g = {k: v.astype(np.float64) for k, v in sd.items()}
    x = patches(image, g["patch_embed.proj.weight"], g["patch_embed.proj.bias"])
    prefix = [g["cls_token"][0]] + ([g["reg_token"][0]] if registers else [])
    if embed_class:  # concat then add
        x = np.concatenate(prefix + [x]) + g["pos_embed"][0]
    else:  # add then concat
        x = np.concatenate(prefix + [x + g["pos_embed"][0]])
    for i in range(DEPTH):
        p = f"blocks.{i}."
        ls1 = g.get(p + "ls1.gamma", 1.0)
        ls2 = g.get(p + "ls2.gamma", 1.0)
        h = layer_norm(x, g[p + "norm1.weight"], g[p + "norm1.bias"], eps)
        wq, wk, wv = np.split(g[p + "attn.qkv.weight"], 3)
        bq, bk, bv = np.split(g[p + "attn.qkv.bias"], 3)
        x = x + ls1 * attention(h, wq, bq, wk, bk, wv, bv, g[p + "attn.proj.weight"], g[p + "attn.proj.bias"], HEADS)
        h = layer_norm(x, g[p + "norm2.weight"], g[p + "norm2.bias"], eps)
        x = x + ls2 * (gelu(h @ g[p + "mlp.fc1.weight"].T + g[p + "mlp.fc1.bias"]) @ g[p + "mlp.fc2.weight"].T
                       + g[p + "mlp.fc2.bias"])
    if fc_norm:  # global_pool 'avg' over the non-prefix tokens, then fc_norm
        return layer_norm(x[1 + registers:].mean(0), g["fc_norm.weight"], g["fc_norm.bias"], eps)
    return layer_norm(x, g["norm.weight"], g["norm.bias"], eps)[0]  # 'token'


def openclip_weights(rng, layer_scale):
    v = "visual."
    sd = {v + "conv1.weight": rand(rng, W, 3, PATCH, PATCH), v + "class_embedding": rand(rng, W),
          v + "positional_embedding": rand(rng, N + 1, W), v + "ln_pre.weight": near_one(rng, W),
          v + "ln_pre.bias": rand(rng, W), v + "ln_post.weight": near_one(rng, W), v + "ln_post.bias": rand(rng, W),
          v + "proj": rand(rng, W, 12),
          "transformer.resblocks.0.ln_1.weight": near_one(rng, 12), "logit_scale": np.array(4.6, np.float32),
          "token_embedding.weight": rand(rng, 20, 12)}
    for i in range(DEPTH):
        p = v + f"transformer.resblocks.{i}."
        sd |= {p + "ln_1.weight": near_one(rng, W), p + "ln_1.bias": rand(rng, W),
               p + "attn.in_proj_weight": rand(rng, 3 * W, W), p + "attn.in_proj_bias": rand(rng, 3 * W),
               p + "attn.out_proj.weight": rand(rng, W, W), p + "attn.out_proj.bias": rand(rng, W),
               p + "ln_2.weight": near_one(rng, W), p + "ln_2.bias": rand(rng, W),
               p + "mlp.c_fc.weight": rand(rng, HIDDEN, W), p + "mlp.c_fc.bias": rand(rng, HIDDEN),
               p + "mlp.c_proj.weight": rand(rng, W, HIDDEN), p + "mlp.c_proj.bias": rand(rng, W)}
        if layer_scale:
            sd |= {p + "ls_1.gamma": near_one(rng, W), p + "ls_2.gamma": near_one(rng, W)}
    return sd


def openclip_forward(sd, image, act, pool):
    """OpenCLIP VisionTransformer: conv1, class token, positions, ln_pre, blocks, ln_post, pool
    (without the projection, which LIFT replaces by its head)."""
    v = "visual."
    g = {k: x.astype(np.float64) for k, x in sd.items()}
    x = np.concatenate([g[v + "class_embedding"][None], patches(image, g[v + "conv1.weight"])])
    x = layer_norm(x + g[v + "positional_embedding"], g[v + "ln_pre.weight"], g[v + "ln_pre.bias"], 1e-5)
    for i in range(DEPTH):
        p = v + f"transformer.resblocks.{i}."
        wq, wk, wv = np.split(g[p + "attn.in_proj_weight"], 3)
        bq, bk, bv = np.split(g[p + "attn.in_proj_bias"], 3)
        h = layer_norm(x, g[p + "ln_1.weight"], g[p + "ln_1.bias"], 1e-5)
        x = x + g.get(p + "ls_1.gamma", 1.0) * attention(h, wq, bq, wk, bk, wv, bv, g[p + "attn.out_proj.weight"],
                                                         g[p + "attn.out_proj.bias"], HEADS)
        h = layer_norm(x, g[p + "ln_2.weight"], g[p + "ln_2.bias"], 1e-5)
        x = x + g.get(p + "ls_2.gamma", 1.0) * (act(h @ g[p + "mlp.c_fc.weight"].T + g[p + "mlp.c_fc.bias"])
                                                @ g[p + "mlp.c_proj.weight"].T + g[p + "mlp.c_proj.bias"])
    x = layer_norm(x, g[v + "ln_post.weight"], g[v + "ln_post.bias"], 1e-5)
    return x[0] if pool == "tok" else x[1:].mean(0)


def hf_clip_weights(rng):
    v = "vision_model."
    sd = {v + "embeddings.patch_embedding.weight": rand(rng, W, 3, PATCH, PATCH),
          v + "embeddings.class_embedding": rand(rng, W),
          v + "embeddings.position_embedding.weight": rand(rng, N + 1, W),
          v + "embeddings.position_ids": np.arange(N + 1, dtype=np.int64)[None],
          v + "pre_layrnorm.weight": near_one(rng, W), v + "pre_layrnorm.bias": rand(rng, W),
          v + "post_layernorm.weight": near_one(rng, W), v + "post_layernorm.bias": rand(rng, W),
          "visual_projection.weight": rand(rng, 12, W), "text_model.final_layer_norm.weight": near_one(rng, 12)}
    for i in range(DEPTH):
        p = v + f"encoder.layers.{i}."
        sd |= {p + "layer_norm1.weight": near_one(rng, W), p + "layer_norm1.bias": rand(rng, W),
               p + "layer_norm2.weight": near_one(rng, W), p + "layer_norm2.bias": rand(rng, W),
               p + "mlp.fc1.weight": rand(rng, HIDDEN, W), p + "mlp.fc1.bias": rand(rng, HIDDEN),
               p + "mlp.fc2.weight": rand(rng, W, HIDDEN), p + "mlp.fc2.bias": rand(rng, W)}
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            sd |= {p + f"self_attn.{proj}.weight": rand(rng, W, W), p + f"self_attn.{proj}.bias": rand(rng, W)}
    return sd


def hf_clip_forward(sd, image):
    """CLIPVisionTransformer: pooler_output = post_layernorm(last_hidden_state[:, 0]), QuickGELU."""
    v = "vision_model."
    g = {k: x.astype(np.float64) for k, x in sd.items()}
    x = np.concatenate([g[v + "embeddings.class_embedding"][None], patches(image, g[v + "embeddings.patch_embedding.weight"])])
    x = layer_norm(x + g[v + "embeddings.position_embedding.weight"], g[v + "pre_layrnorm.weight"], g[v + "pre_layrnorm.bias"], 1e-5)
    for i in range(DEPTH):
        p = v + f"encoder.layers.{i}.self_attn."
        h = layer_norm(x, g[v + f"encoder.layers.{i}.layer_norm1.weight"], g[v + f"encoder.layers.{i}.layer_norm1.bias"], 1e-5)
        x = x + attention(h, *[g[p + f"{n}.{k}"] for n in ("q_proj", "k_proj", "v_proj") for k in ("weight", "bias")],
                          g[p + "out_proj.weight"], g[p + "out_proj.bias"], HEADS)
        m = v + f"encoder.layers.{i}."
        h = layer_norm(x, g[m + "layer_norm2.weight"], g[m + "layer_norm2.bias"], 1e-5)
        x = x + quick_gelu(h @ g[m + "mlp.fc1.weight"].T + g[m + "mlp.fc1.bias"]) @ g[m + "mlp.fc2.weight"].T + g[m + "mlp.fc2.bias"]
    return layer_norm(x[0], g[v + "post_layernorm.weight"], g[v + "post_layernorm.bias"], 1e-5)


def dinov2_weights(rng, registers):
    sd = {"embeddings.patch_embeddings.projection.weight": rand(rng, W, 3, PATCH, PATCH),
          "embeddings.patch_embeddings.projection.bias": rand(rng, W),
          "embeddings.cls_token": rand(rng, 1, 1, W), "embeddings.mask_token": rand(rng, 1, W),
          "embeddings.position_embeddings": rand(rng, 1, N + 1, W),
          "layernorm.weight": near_one(rng, W), "layernorm.bias": rand(rng, W)}
    if registers:
        sd["embeddings.register_tokens"] = rand(rng, 1, registers, W)
    for i in range(DEPTH):
        p = f"encoder.layer.{i}."
        sd |= {p + "norm1.weight": near_one(rng, W), p + "norm1.bias": rand(rng, W),
               p + "norm2.weight": near_one(rng, W), p + "norm2.bias": rand(rng, W),
               p + "attention.output.dense.weight": rand(rng, W, W), p + "attention.output.dense.bias": rand(rng, W),
               p + "layer_scale1.lambda1": near_one(rng, W), p + "layer_scale2.lambda1": near_one(rng, W),
               p + "mlp.fc1.weight": rand(rng, HIDDEN, W), p + "mlp.fc1.bias": rand(rng, HIDDEN),
               p + "mlp.fc2.weight": rand(rng, W, HIDDEN), p + "mlp.fc2.bias": rand(rng, W)}
        for n in ("query", "key", "value"):
            sd |= {p + f"attention.attention.{n}.weight": rand(rng, W, W), p + f"attention.attention.{n}.bias": rand(rng, W)}
    return sd


def dinov2_forward(sd, image, registers):
    """Dinov2Model pooler_output: layernorm(...)[:, 0]; registers inserted after the position add."""
    g = {k: x.astype(np.float64) for k, x in sd.items()}
    x = np.concatenate([g["embeddings.cls_token"][0], patches(image, g["embeddings.patch_embeddings.projection.weight"],
                                                              g["embeddings.patch_embeddings.projection.bias"])])
    x = x + g["embeddings.position_embeddings"][0]
    if registers:
        x = np.concatenate([x[:1], g["embeddings.register_tokens"][0], x[1:]])
    for i in range(DEPTH):
        p = f"encoder.layer.{i}."
        a = p + "attention.attention."
        h = layer_norm(x, g[p + "norm1.weight"], g[p + "norm1.bias"], 1e-6)
        x = x + g[p + "layer_scale1.lambda1"] * attention(
            h, *[g[a + f"{n}.{k}"] for n in ("query", "key", "value") for k in ("weight", "bias")],
            g[p + "attention.output.dense.weight"], g[p + "attention.output.dense.bias"], HEADS)
        h = layer_norm(x, g[p + "norm2.weight"], g[p + "norm2.bias"], 1e-6)
        x = x + g[p + "layer_scale2.lambda1"] * (gelu(h @ g[p + "mlp.fc1.weight"].T + g[p + "mlp.fc1.bias"])
                                                 @ g[p + "mlp.fc2.weight"].T + g[p + "mlp.fc2.bias"])
    return layer_norm(x, g["layernorm.weight"], g["layernorm.bias"], 1e-6)[0]


# ------------------------------------------------------------------------------------------

def import_and_compare(tmp_path, sd, config, forward, expected_scheme, **options):
    weights = tmp_path / "model.safetensors"
    save_file(sd, str(weights))
    if config is not None:
        (tmp_path / config[0]).write_text(json.dumps(config[1]))
    model, scheme = liblift.Model.import_pretrained(weights, TEXT, **options)
    assert scheme == expected_scheme
    images = np.random.default_rng(5).standard_normal((3, 3, SIZE, SIZE)).astype(np.float32)
    got = model.encode(images)
    for b in range(3):
        want = lift_head(model, forward(sd, images[b].astype(np.float64)))
        np.testing.assert_allclose(got[b], want, atol=1e-5, err_msg=f"image {b}")
    return model


@pytest.mark.parametrize("registers,embed_class", [(0, True), (2, True), (3, False)])
@pytest.mark.parametrize("fc_norm", [False, True])
def test_timm(tmp_path, registers, embed_class, fc_norm):
    rng = np.random.default_rng(registers * 10 + fc_norm)
    sd = timm_weights(rng, registers, embed_class, layer_scale=True, fc_norm=fc_norm)
    config = ("config.json", {"architecture": "vit_test_patch4", "num_classes": 10, "model_args": {"num_heads": HEADS},
                              "global_pool": "avg" if fc_norm else "token",
                              "pretrained_cfg": {"input_size": [3, SIZE, SIZE], "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
                                                 "pool_size": None, "crop_pct": 0.9, "license": None},
                              "layer_norm_eps": None})
    model = import_and_compare(tmp_path, sd, config, lambda s, im: timm_forward(s, im, registers, embed_class, fc_norm),
                               "timm")
    c = model.config
    assert (c.registers, c.layer_scale, c.patch_bias, c.ln_pre, c.layer_norm_eps) == (registers, True, True, False, pytest.approx(1e-6))
    assert (c.pool, c.final_norm) == (("avg", "pooled") if fc_norm else ("tok", "tokens"))


@pytest.mark.parametrize("act,layer_scale", [("quick_gelu", False), ("gelu", True)])
@pytest.mark.parametrize("pool", ["tok", "avg"])
def test_openclip(tmp_path, act, layer_scale, pool):
    rng = np.random.default_rng(7)
    sd = openclip_weights(rng, layer_scale)
    config = ("open_clip_config.json", {"model_cfg": {"embed_dim": 12, "quick_gelu": act == "quick_gelu",
                                                      "vision_cfg": {"image_size": SIZE, "layers": DEPTH, "width": W,
                                                                     "patch_size": PATCH, "head_width": W // HEADS,
                                                                     "pool_type": pool}},
                                        "preprocess_cfg": {"mean": [0.4, 0.4, 0.4], "std": [0.3, 0.3, 0.3]}})
    model = import_and_compare(tmp_path, sd, config,
                               lambda s, im: openclip_forward(s, im, quick_gelu if act == "quick_gelu" else gelu, pool),
                               "openclip")
    assert model.config.image_mean == pytest.approx((0.4, 0.4, 0.4)) and model.config.activation == act


def test_hf_clip(tmp_path):
    sd = hf_clip_weights(np.random.default_rng(8))
    config = ("config.json", {"model_type": "clip", "vision_config": {"hidden_size": W, "num_attention_heads": HEADS,
                                                                      "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5,
                                                                      "image_size": SIZE, "patch_size": PATCH}})
    import_and_compare(tmp_path, sd, config, hf_clip_forward, "hf-clip")


@pytest.mark.parametrize("registers", [0, 4])
def test_hf_dinov2(tmp_path, registers):
    sd = dinov2_weights(np.random.default_rng(9 + registers), registers)
    config = ("config.json", {"model_type": "dinov2", "hidden_size": W, "num_attention_heads": HEADS,
                              "layer_norm_eps": 1e-6, "hidden_act": "gelu", "image_size": SIZE, "patch_size": PATCH})
    import_and_compare(tmp_path, sd, config, lambda s, im: dinov2_forward(s, im, registers), "hf-dinov2")


def test_float16_and_bfloat16_weights(tmp_path):
    """Pretrained files often hold half-precision tensors: they are widened exactly."""
    rng = np.random.default_rng(3)
    sd = timm_weights(rng, 0, True, layer_scale=False, fc_norm=False)
    half = {k: v.astype(np.float16) for k, v in sd.items()}
    config = ("config.json", {"architecture": "vit_test", "model_args": {"num_heads": HEADS}})
    import_and_compare(tmp_path, half, config, lambda s, im: timm_forward(s, im, 0, True, False), "timm")


def test_errors_name_the_tensor_or_option(tmp_path):
    rng = np.random.default_rng(4)
    base = timm_weights(rng, 0, True, layer_scale=False, fc_norm=False)
    path = tmp_path / "model.safetensors"

    def expect(sd, fragment, **options):
        save_file(sd, str(path))
        with pytest.raises(liblift.LiftError) as e:
            liblift.Model.import_pretrained(path, TEXT, **options)
        assert fragment in e.value.message, e.value.message

    missing = dict(base)
    del missing["blocks.1.mlp.fc2.bias"]
    expect(missing, "blocks.1.mlp.fc2.bias", heads=HEADS)
    wrong = dict(base, **{"blocks.0.attn.proj.weight": rand(rng, W, W + 1)})
    expect(wrong, "blocks.0.attn.proj.weight", heads=HEADS)
    extra = dict(base, **{"blocks.0.attn.q_norm.weight": near_one(rng, W // HEADS)})
    expect(extra, "blocks.0.attn.q_norm.weight", heads=HEADS)
    expect(base, "pass heads")  # no config file, no option
    # A tensor with NaN or infinity is refused at the import, by its name.
    for value in (np.nan, np.inf):
        bad = dict(base, **{"blocks.1.attn.qkv.weight": base["blocks.1.attn.qkv.weight"].copy()})
        bad["blocks.1.attn.qkv.weight"][5, 2] = value
        expect(bad, "tensor 'blocks.1.attn.qkv.weight'", heads=HEADS)
    bad = dict(base, **{"pos_embed": base["pos_embed"].copy()})
    bad["pos_embed"][0, 3, 1] = np.nan
    expect(bad, "tensor 'pos_embed' holds a non-finite value", heads=HEADS)


@pytest.mark.parametrize("scheme,key,value,fragment", [
    ("timm", ["pretrained_cfg", "mean"], [0.5, 0.5], "pretrained_cfg.mean must be one number, or a list of 3"),
    ("timm", ["pretrained_cfg"], [], "pretrained_cfg must be an object, got []"),
    ("timm", ["layer_norm_eps"], "1e-6", "layer_norm_eps must be a number, got \"1e-6\""),
    ("timm", ["model_args", "num_heads"], 0, "model_args.num_heads must be a whole number"),
    ("timm", ["global_pool"], 1, "global_pool must be a string"),
    ("openclip", ["preprocess_cfg", "std"], [0.3, 0.3, "0.3"], "preprocess_cfg.std must be one number, or a list of 3"),
    ("openclip", ["model_cfg", "quick_gelu"], "yes", "model_cfg.quick_gelu must be true or false"),
    ("hf-clip", ["vision_config", "layer_norm_eps"], "1e-5", "vision_config.layer_norm_eps must be a number"),
])
def test_config_values_of_the_wrong_type_are_errors(tmp_path, scheme, key, value, fragment):
    """A config value liblift reads but cannot use (a 1-value mean for a 3-channel patch
    embedding, a number written as a string) is an error naming the file and the key, never
    replaced by a default."""
    rng = np.random.default_rng(6)
    if scheme == "timm":
        sd = timm_weights(rng, 0, True, layer_scale=False, fc_norm=False)
        name, config = "config.json", {"architecture": "vit_test", "model_args": {"num_heads": HEADS}}
    elif scheme == "openclip":
        sd = openclip_weights(rng, False)
        name, config = "open_clip_config.json", {"model_cfg": {"quick_gelu": False, "vision_cfg": {"head_width": W // HEADS}}}
    else:
        sd = hf_clip_weights(rng)
        name, config = "config.json", {"model_type": "clip", "vision_config": {"num_attention_heads": HEADS}}
    node = config
    for k in key[:-1]:
        node = node.setdefault(k, {})
    node[key[-1]] = value
    save_file(sd, str(tmp_path / "model.safetensors"))
    (tmp_path / name).write_text(json.dumps(config))
    with pytest.raises(liblift.LiftError) as e:
        liblift.Model.import_pretrained(tmp_path / "model.safetensors", TEXT)
    assert e.value.status_name == "LIFT_ERR_FORMAT" and fragment in e.value.message, e.value.message
    assert str(tmp_path / name) in e.value.message


def test_config_statistics_as_one_number_apply_to_every_channel(tmp_path):
    """Hugging Face image processors and torchvision's Normalize accept one mean and std for all
    channels (a number, or a one-element list): each is repeated per channel."""
    sd = dinov2_weights(np.random.default_rng(11), 0)
    save_file(sd, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "dinov2", "num_attention_heads": HEADS}))
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"image_mean": 0.25, "image_std": [0.5]}))
    model, _ = liblift.Model.import_pretrained(tmp_path / "model.safetensors", TEXT)
    assert model.config.image_mean == pytest.approx((0.25,) * 3) and model.config.image_std == pytest.approx((0.5,) * 3)


def test_lift_train_init_and_info(tmp_path):
    """`lift info` recognises a pretrained file; `lift train --init` imports it (here resampling a
    4x4 grid to 2x2 for 8-px images) and, with a zero learning rate, keeps its weights."""
    from cli_helpers import lift, make_tiny

    sd = timm_weights(np.random.default_rng(12), 2, True, layer_scale=True, fc_norm=True)
    save_file(sd, str(tmp_path / "vit.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({"architecture": "vit_test", "model_args": {"num_heads": HEADS},
                                                      "global_pool": "avg"}))
    info = lift("info", tmp_path / "vit.safetensors").stdout
    assert "pretrained timm encoder" in info and "2 registers" in info and "LayerScale" in info, info
    make_tiny(tmp_path)
    lift("train", "--init", tmp_path / "vit.safetensors", "--data", tmp_path / "train.h5", "--out", tmp_path / "run",
         "--image-size", 8, "--steps", 2, "--batch-size", 8, "--lr", 0, "--quiet")
    model = liblift.Model.load(tmp_path / "run" / "model.safetensors")
    c = model.config
    assert (c.image_size, c.registers, c.layer_scale, c.final_norm) == (8, 2, True, "pooled")
    np.testing.assert_array_equal(model.tensor("visual.transformer.resblocks.1.mlp.c_fc.weight"), sd["blocks.1.mlp.fc1.weight"])
    np.testing.assert_array_equal(model.tensor("visual.transformer.resblocks.0.ls_2.gamma"), sd["blocks.0.ls2.gamma"])
    r = lift("train", "--init", tmp_path / "vit.safetensors", "--depth", 3, "--out", tmp_path / "x", check=False)
    assert r.returncode != 0 and r.stderr.count("\n") == 1 and "--depth cannot be combined with --init" in r.stderr


def tower_config(**options):
    return liblift.ModelConfig(image_size=SIZE, channels=3, patch=PATCH, width=W, depth=DEPTH, heads=HEADS,
                               text_dim=TEXT, mlp_ratio=HIDDEN // W, **options)


def randomised(config, seed):
    """A model with every tower tensor random (LayerScale included, away from 1)."""
    model = liblift.Model(config, seed=seed)
    rng = np.random.default_rng(seed)
    for t in model.tensors():
        if t.name.startswith("visual."):
            model.tensor(t.name)[...] += rng.standard_normal(t.shape).astype(np.float32) * 0.2
    return model


EXPORTS = {
    # scheme: (model options, file name to load, independent forward of the exported file)
    "timm": (dict(patch_bias=True, ln_pre=False, layer_scale=True, registers=2, final_norm="pooled", pool="avg",
                  layer_norm_eps=1e-6), lambda sd, im: timm_forward(sd, im, 2, True, True)),
    "openclip": (dict(activation="quick_gelu", pool="tok"), lambda sd, im: openclip_forward(sd, im, quick_gelu, "tok")),
    "hf-clip": (dict(activation="quick_gelu", pool="tok", final_norm="pooled"), hf_clip_forward),
    "hf-dinov2": (dict(patch_bias=True, ln_pre=False, layer_scale=True, registers=4, pool="tok", layer_norm_eps=1e-6),
                  lambda sd, im: dinov2_forward(sd, im, 4)),
}


@pytest.mark.parametrize("scheme", list(EXPORTS))
def test_export_to_each_scheme(tmp_path, scheme):
    """A tower written in a scheme's names computes, under that scheme's own semantics, the
    features liblift computes; and it imports back to the same model."""
    from safetensors.numpy import load_file

    options, forward = EXPORTS[scheme]
    model = randomised(tower_config(**options), seed=len(scheme))
    path = tmp_path / "tower.safetensors"
    model.export(path, scheme)
    sd = load_file(str(path))
    assert not any(k.startswith("mlp_projector") for k in sd), "the LIFT head is not part of a scheme"
    images = np.random.default_rng(2).standard_normal((2, 3, SIZE, SIZE)).astype(np.float32)
    got = model.encode(images)
    for b in range(2):
        np.testing.assert_allclose(got[b], lift_head(model, forward(sd, images[b].astype(np.float64))), atol=1e-5)
    back, detected = liblift.Model.import_pretrained(path, TEXT)
    assert detected == scheme
    assert back.config == model.config
    for t in model.tensors():
        if not t.name.startswith("visual."):
            back.tensor(t.name)[...] = model.tensor(t.name)
    np.testing.assert_allclose(back.encode(images), got, atol=1e-6)


def test_export_refuses_what_a_scheme_cannot_express(tmp_path):
    model = liblift.Model(tower_config(registers=2))
    with pytest.raises(liblift.LiftError) as e:
        model.export(tmp_path / "x.safetensors", "openclip")
    assert "register tokens" in e.value.message and not (tmp_path / "x.safetensors").exists()


def test_lift_train_lock_image_keeps_the_tower(tmp_path):
    """--lock-image trains only the LIFT head: every tower tensor stays as imported."""
    from cli_helpers import lift, make_tiny

    sd = timm_weights(np.random.default_rng(13), 0, True, layer_scale=False, fc_norm=False)
    save_file(sd, str(tmp_path / "vit.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({"architecture": "vit_test", "model_args": {"num_heads": HEADS},
                                                      "pretrained_cfg": {"input_size": [3, SIZE, SIZE]}}))
    make_tiny(tmp_path)
    lift("train", "--init", tmp_path / "vit.safetensors", "--data", tmp_path / "train.h5", "--out", tmp_path / "run",
         "--image-size", 8, "--steps", 3, "--batch-size", 8, "--warmup", 0, "--lock-image", "--quiet")
    trained = liblift.Model.load(tmp_path / "run" / "model.safetensors")
    imported, _ = liblift.Model.import_pretrained(tmp_path / "vit.safetensors", trained.config.text_dim, image_size=8)
    for t in trained.tensors():
        same = np.array_equal(trained.tensor(t.name), imported.tensor(t.name))
        assert same == t.name.startswith("visual."), t.name
    assert "image tower locked (head only)" in lift("info", tmp_path / "run" / "checkpoint.safetensors").stdout
    r = lift("train", "--data", tmp_path / "train.h5", "--out", tmp_path / "run", "--resume", "--batch-size", 8,
             "--lock-unlocked-groups", 1,
             check=False)
    assert r.returncode != 0 and "other locking" in r.stderr


def test_head_only_steps_on_pooled_features(tmp_path):
    """With the tower locked, steps on Model.features equal steps on the images (to float
    rounding), leave the tower alone, and are refused while any tower group trains."""
    config = liblift.ModelConfig(image_size=8, channels=3, patch=4, width=16, depth=2, heads=2, mlp_ratio=2,
                                 head_layers=1, text_dim=6)
    rng = np.random.default_rng(5)
    batches = [(rng.standard_normal((4, 3, 8, 8)).astype(np.float32), rng.standard_normal((4, 6)).astype(np.float32))
               for _ in range(3)]
    runs = []
    for on_features in (False, True):
        model = liblift.Model(config, seed=2)
        trainer = liblift.Trainer(model, unlocked_groups=0, warmup_steps=0, batch_capacity=4)
        for images, texts in batches:
            if on_features:
                features = model.features(images)
                assert features.shape == (4, 16)
                trainer.step_features(features, texts)
            else:
                trainer.step(images, texts)
        runs.append({t.name: model.tensor(t.name).copy() for t in model.tensors()})
    fresh = liblift.Model(config, seed=2)
    for name, value in runs[1].items():
        np.testing.assert_allclose(value, runs[0][name], rtol=1e-5, atol=1e-6, err_msg=name)
        assert np.array_equal(value, fresh.tensor(name)) == name.startswith("visual."), name
    unlocked = liblift.Trainer(fresh, unlocked_groups=1, batch_capacity=4)
    with pytest.raises(liblift.LiftError, match="whole image tower frozen"):
        unlocked.step_features(np.ones((4, 16), np.float32), batches[0][1])
    with pytest.raises(ValueError):
        liblift.Trainer(liblift.Model(config), unlocked_groups=0).step_features(np.ones((4, 15), np.float32),
                                                                                 batches[0][1])


def test_lift_train_caches_the_features_of_a_locked_tower(tmp_path):
    """--lock-image without augmentation computes each image's pooled feature once: the run
    equals one that runs the tower every step (to float rounding), a --feature-cache file is
    reused by the next run, and a resumed run continues bit-identically."""
    from cli_helpers import lift, make_tiny

    make_tiny(tmp_path)
    common = ["--data", tmp_path / "train.h5", "--preset", "ViT-XS/4-32", "--image-size", 8, "--patch", 4, "--width", 16,
              "--depth", 2, "--heads", 2, "--batch-size", 16, "--warmup", 0, "--lock-image", "--eval-every", 0]
    cached = lift("train", *common, "--steps", 8, "--out", tmp_path / "cached", "--feature-cache", tmp_path / "f.h5")
    assert "computed 96 x 16 pooled features" in cached.stderr
    lift("train", *common, "--steps", 8, "--out", tmp_path / "tower", "--feature-cache", "off")
    a = liblift.Model.load(tmp_path / "cached" / "model.safetensors")
    b = liblift.Model.load(tmp_path / "tower" / "model.safetensors")
    for t in a.tensors():
        np.testing.assert_allclose(a.tensor(t.name), b.tensor(t.name), rtol=1e-4, atol=1e-6, err_msg=t.name)

    # The file is reused; stopping and resuming gives the uninterrupted run's model.
    lift("train", *common, "--steps", 8, "--stop-at", 4, "--out", tmp_path / "resumed", "--feature-cache", tmp_path / "f.h5")
    r = lift("train", *common, "--steps", 8, "--resume", "--out", tmp_path / "resumed", "--feature-cache", tmp_path / "f.h5")
    assert "read 96 x 16 pooled features" in r.stderr
    assert "feature cache of 96 images x 16 pooled features" in lift("info", tmp_path / "f.h5").stdout
    assert "ok: feature cache of 96 x 16" in lift("check", tmp_path / "f.h5").stdout
    c = liblift.Model.load(tmp_path / "resumed" / "model.safetensors")
    for t in a.tensors():
        assert np.array_equal(a.tensor(t.name), c.tensor(t.name)), t.name

    # Never overwrites a file that is not a cache.
    before = (tmp_path / "train.h5").read_bytes()
    r = lift("train", *common, "--steps", 2, "--out", tmp_path / "bad", "--feature-cache", tmp_path / "train.h5",
             check=False)
    assert r.returncode != 0 and "is not a feature cache: its content is an image-caption dataset" in r.stderr
    assert (tmp_path / "train.h5").read_bytes() == before
    r = lift("train", *common, "--steps", 2, "--out", tmp_path / "bad", "--feature-cache", tmp_path / "train.h5",
             "--trust-inputs", check=False)
    assert r.returncode != 0 and "not a liblift feature cache" in r.stderr
