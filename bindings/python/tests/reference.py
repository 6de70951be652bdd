"""An independent numpy (float64) implementation of the LIFT image encoder, written from the
OpenCLIP VisionTransformer semantics in docs/design.md (section 2), reading a PyTorch-style state dict."""
import math

import numpy as np

_erf = np.vectorize(math.erf)


def expected_state_dict_shapes(c: dict) -> dict:
    """name -> shape, as OpenCLIP's VisionTransformer (no proj) + LIFT's mlp_projector define them."""
    w, f, d, t = c["width"], c["mlp_ratio"] * c["width"], c["text_dim"], (c["image_size"] // c["patch"]) ** 2 + 1
    shapes = {
        "visual.conv1.weight": (w, c["channels"], c["patch"], c["patch"]),
        "visual.class_embedding": (w,),
        "visual.positional_embedding": (t, w),
        "visual.ln_pre.weight": (w,), "visual.ln_pre.bias": (w,),
    }
    for i in range(c["depth"]):
        p = f"visual.transformer.resblocks.{i}."
        shapes.update({
            p + "ln_1.weight": (w,), p + "ln_1.bias": (w,),
            p + "attn.in_proj_weight": (3 * w, w), p + "attn.in_proj_bias": (3 * w,),
            p + "attn.out_proj.weight": (w, w), p + "attn.out_proj.bias": (w,),
            p + "ln_2.weight": (w,), p + "ln_2.bias": (w,),
            p + "mlp.c_fc.weight": (f, w), p + "mlp.c_fc.bias": (f,),
            p + "mlp.c_proj.weight": (w, f), p + "mlp.c_proj.bias": (w,),
        })
    shapes.update({"visual.ln_post.weight": (w,), "visual.ln_post.bias": (w,)})
    for layer in range(c["head_layers"]):
        shapes[f"mlp_projector.projector.{2 * layer}.weight"] = (d, w if layer == 0 else d)
        shapes[f"mlp_projector.projector.{2 * layer}.bias"] = (d,)
    shapes["logit_scale"] = ()
    if c["objective"] == "sigmoid":
        shapes["logit_bias"] = ()
    return shapes


def layer_norm(x, g, b, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g + b


def gelu(x):
    return 0.5 * x * (1 + _erf(x / math.sqrt(2)))


def encode(sd: dict, c: dict, images: np.ndarray) -> np.ndarray:
    """Unit-norm embeddings of float (B, C, S, S) normalised images."""
    sd = {k: np.asarray(v, np.float64) for k, v in sd.items()}
    b, p, w, h = images.shape[0], c["patch"], c["width"], c["heads"]
    g = c["image_size"] // p
    x = images.astype(np.float64)
    # Conv2d(C, W, kernel=p, stride=p, bias=False) as a per-patch product.
    patches = x.reshape(b, c["channels"], g, p, g, p).transpose(0, 2, 4, 1, 3, 5).reshape(b, g * g, -1)
    tokens = patches @ sd["visual.conv1.weight"].reshape(w, -1).T
    cls = np.broadcast_to(sd["visual.class_embedding"], (b, 1, w))
    x = np.concatenate([cls, tokens], axis=1) + sd["visual.positional_embedding"]
    x = layer_norm(x, sd["visual.ln_pre.weight"], sd["visual.ln_pre.bias"])
    hd = w // h
    for i in range(c["depth"]):
        pre = f"visual.transformer.resblocks.{i}."
        y = layer_norm(x, sd[pre + "ln_1.weight"], sd[pre + "ln_1.bias"])
        qkv = y @ sd[pre + "attn.in_proj_weight"].T + sd[pre + "attn.in_proj_bias"]
        q, k, v = np.split(qkv, 3, axis=-1)
        q = q.reshape(b, -1, h, hd).transpose(0, 2, 1, 3)
        k = k.reshape(b, -1, h, hd).transpose(0, 2, 1, 3)
        v = v.reshape(b, -1, h, hd).transpose(0, 2, 1, 3)
        s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hd)
        s = np.exp(s - s.max(-1, keepdims=True))
        a = (s / s.sum(-1, keepdims=True)) @ v
        a = a.transpose(0, 2, 1, 3).reshape(b, -1, w)
        x = x + a @ sd[pre + "attn.out_proj.weight"].T + sd[pre + "attn.out_proj.bias"]
        y = layer_norm(x, sd[pre + "ln_2.weight"], sd[pre + "ln_2.bias"])
        y = gelu(y @ sd[pre + "mlp.c_fc.weight"].T + sd[pre + "mlp.c_fc.bias"])
        x = x + y @ sd[pre + "mlp.c_proj.weight"].T + sd[pre + "mlp.c_proj.bias"]
    x = layer_norm(x, sd["visual.ln_post.weight"], sd["visual.ln_post.bias"])
    pooled = x[:, 1:].mean(1) if c["pool"] == "avg" else x[:, 0]
    z = pooled @ sd["mlp_projector.projector.0.weight"].T + sd["mlp_projector.projector.0.bias"]
    for layer in range(1, c["head_layers"]):
        z = gelu(z) @ sd[f"mlp_projector.projector.{2 * layer}.weight"].T + sd[f"mlp_projector.projector.{2 * layer}.bias"]
    return z / np.linalg.norm(z, axis=1, keepdims=True)
