"""Reference outputs for models whose blocks have their own heads, head_dim and
mlp_dim (tests/perblock_test.cpp), from the plain-PyTorch RefViT:
- OUTDIR/perblock/<case>.safetensors: the weights (torchvision names) and the
  vitkit.config / vitkit.preprocess metadata that vitkit's save_model writes
  (config_to_json: per-block shapes as "blocks": [{heads, head_dim, mlp_dim}]);
- OUTDIR/perblock/<case>.io.safetensors: input_b<N> / logits_b<N> (eval mode);
  input, labels, loss and grad.<name> of every parameter for cross-entropy with
  label smoothing 0.1, mean over the batch (as grad_ref.py); the parameter
  count (param_count) and the multiply-accumulates per image (macs) counted
  here from the modules' weight shapes."""
import os

import torch
import torch.nn.functional as F

from _common import out_dir, randomize, save_safetensors, vitkit_config
from _models import Block, RefViT

torch.set_num_threads(2)
OUT = out_dir("perblock")
SMOOTH = 0.1


def check_attention_against_mha(seed=5, dim=48, heads=3):
    """Block.attn, the hand-written attention every block runs (any head_dim),
    is nn.MultiheadAttention's where that exists (heads x head_dim = dim)."""
    torch.manual_seed(seed)
    blk = Block(dim, heads, 8, "pre", "gelu", True, 1e-6)  # holds an nn.MultiheadAttention
    with torch.no_grad():
        blk.self_attention.in_proj_bias.normal_()
        x = torch.randn(2, 5, dim)
        want = blk.self_attention(x, x, x, need_weights=False)[0]
        got = blk.attn(x)
    err = (got - want).abs().max().item()
    assert err <= 1e-5 * want.abs().max().item(), f"hand-written attention differs from nn.MultiheadAttention: {err}"


def metadata(name, cfg, mean, std):
    """What vitkit's config_to_json writes for cfg: the top-level heads,
    head_dim and mlp_dim are block 0's (head_dim only when heads x head_dim
    differs from dim), the per-block shapes a list of objects."""
    h0, hd0, m0 = cfg["blocks"][0]
    md = dict(name=name, image_size=cfg["image_size"], channels=cfg["channels"], patch=cfg["patch"], dim=cfg["dim"],
              depth=cfg["depth"], heads=h0)
    if h0 * hd0 != cfg["dim"]:
        md["head_dim"] = hd0
    md.update(mlp_dim=m0, blocks=[dict(heads=h, head_dim=hd, mlp_dim=m) for h, hd, m in cfg["blocks"]],
              classes=cfg["classes"], norm_eps=cfg["norm_eps"], norm=cfg["norm"], act=cfg["act"], pool=cfg["pool"],
              class_token=cfg["class_token"], final_norm=cfg["final_norm"], qkv_bias=cfg["qkv_bias"], dropout=0.0,
              preprocess=dict(mean=mean, std=std, resize=0, crop=0, interpolation="bilinear"))
    return vitkit_config(**md)


def macs_per_image(model, cfg):
    """Multiply-accumulates of every matmul for one image, from the modules'
    weight shapes: each linear layer rows x in x out (conv_proj: a patch's
    C p p values in), attention's q.k^T and attention.v T x T x (heads x head_dim) each."""
    P = (cfg["image_size"] // cfg["patch"]) ** 2
    T = P + (1 if cfg["class_token"] else 0)
    w = model.conv_proj.weight
    total = P * w.shape[0] * w[0].numel()
    for blk in model.encoder.layers.children():
        a = blk.self_attention
        width = a.in_proj_weight.shape[0] // 3
        total += T * a.in_proj_weight.numel() + 2 * T * T * width + T * a.out_proj.weight.numel()
        total += T * blk.mlp[0].weight.numel() + T * blk.mlp[3].weight.numel()
    return total + model.heads.head.weight.numel()


def write_case(name, seed, batches, grad_batch, mean, std, **cfg):
    model = RefViT(heads=0, mlp_dim=0, **cfg)  # every block's shape comes from cfg["blocks"]
    randomize(model, seed, std=0.1)
    for i, (h, hd, m) in enumerate(cfg["blocks"]):  # the shapes the model was built with
        blk = getattr(model.encoder.layers, f"encoder_layer_{i}")
        assert blk.self_attention.in_proj_weight.shape == (3 * h * hd, cfg["dim"])
        assert blk.self_attention.out_proj.weight.shape == (cfg["dim"], h * hd)
        assert blk.mlp[0].weight.shape == (m, cfg["dim"]) and blk.mlp[3].weight.shape == (cfg["dim"], m)
    save_safetensors(os.path.join(OUT, name + ".safetensors"), model.state_dict(), metadata(name, cfg, mean, std))

    io = {}
    g = torch.Generator().manual_seed(seed + 1)
    C, S = cfg["channels"], cfg["image_size"]
    model.eval()
    for b in batches:
        x = torch.randn(b, C, S, S, generator=g)
        with torch.no_grad():
            io[f"logits_b{b}"] = model(x)
        io[f"input_b{b}"] = x
    x = torch.randn(grad_batch, C, S, S, generator=g)
    y = torch.randint(0, cfg["classes"], (grad_batch,), generator=g)
    loss = F.cross_entropy(model(x), y, label_smoothing=SMOOTH)
    loss.backward()
    io.update(input=x, labels=y.to(torch.int32), loss=loss.detach().reshape(1))
    for n, p in model.named_parameters():
        io["grad." + n] = p.grad
    count = sum(p.numel() for p in model.parameters())
    io["param_count"] = torch.tensor([count], dtype=torch.int64)
    io["macs"] = torch.tensor([macs_per_image(model, cfg)], dtype=torch.int64)
    save_safetensors(os.path.join(OUT, name + ".io.safetensors"), io)
    print(f"perblock_ref: {name}: {count} parameters, {io['macs'].item()} MACs per image")


check_attention_against_mha()
# Pre-norm, exact GELU, class token: 4, 3, 2 heads of 16 (q, k, v 64, 48, 32
# wide with dim 48) and MLPs of 256, 200, 96.
write_case("pre_gelu_cls", 21, [1, 4], 3, [0.5] * 3, [0.25] * 3, image_size=16, channels=3, patch=4, dim=48,
           depth=3, blocks=[(4, 16, 256), (3, 16, 200), (2, 16, 96)], classes=10, norm="pre", act="gelu",
           pool="cls", class_token=True, final_norm=True, qkv_bias=True, norm_eps=1e-6)
# Post-norm, ReLU, mean pooling without a class token, no qkv bias: head_dim
# differs per block too (q, k, v 48, 40, 20 wide with dim 36; a single head).
write_case("post_relu_mean", 22, [1, 3], 4, [0.5], [0.5], image_size=12, channels=1, patch=3, dim=36, depth=3,
           blocks=[(2, 24, 64), (5, 8, 120), (1, 20, 50)], classes=7, norm="post", act="relu", pool="mean",
           class_token=False, final_norm=True, qkv_bias=False, norm_eps=1e-5)
print("perblock_ref: wrote", len(os.listdir(OUT)), "files to", OUT)
