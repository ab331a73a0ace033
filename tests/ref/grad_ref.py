"""Reference gradients and optimizer steps for vitkit's training code:
- OUTDIR/grad/<case>.safetensors: weights (vitkit metadata) and
  <case>.io.safetensors: input, labels, loss, and grad.<name> for every parameter
  (cross-entropy with label smoothing 0.1, mean over the batch);
- OUTDIR/grad/adamw.*: 20 AdamW steps (decay only on weight matrices, warmup +
  cosine learning rates, gradient clipping at 1.0), the loss before each step
  and the final weights."""
import math
import os

import torch
import torch.nn.functional as F

from _common import out_dir, randomize, save_safetensors, vitkit_config
from _models import RefViT

torch.set_num_threads(2)
OUT = out_dir("grad")
SMOOTH = 0.1


def config(**kw):
    c = dict(image_size=16, channels=3, patch=4, dim=32, depth=2, heads=4, mlp_dim=48, classes=7, norm="pre",
             act="gelu", pool="cls", class_token=True, final_norm=True, qkv_bias=True, norm_eps=1e-6)
    c.update(kw)
    return c


def grad_case(name, seed, batch=3, **kw):
    cfg = config(**kw)
    model = RefViT(**cfg)
    randomize(model, seed, std=0.15)
    g = torch.Generator().manual_seed(seed + 100)
    x = torch.randn(batch, cfg["channels"], cfg["image_size"], cfg["image_size"], generator=g)
    y = torch.randint(0, cfg["classes"], (batch,), generator=g)
    loss = F.cross_entropy(model(x), y, label_smoothing=SMOOTH)
    loss.backward()
    save_safetensors(os.path.join(OUT, name + ".safetensors"), model.state_dict(), vitkit_config(**cfg))
    io = {"input": x, "labels": y.to(torch.int32), "loss": loss.detach().reshape(1)}
    for n, p in model.named_parameters():
        io["grad." + n] = p.grad
    save_safetensors(os.path.join(OUT, name + ".io.safetensors"), io)


def adamw_case(seed=7, steps=20, batch=8):
    cfg = config(classes=5)
    model = RefViT(**cfg)
    randomize(model, seed, std=0.1)
    save_safetensors(os.path.join(OUT, "adamw.safetensors"), model.state_dict(), vitkit_config(**cfg))
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        (decay if p.dim() >= 2 and n not in ("encoder.pos_embedding", "class_token") else no_decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.999), eps=1e-8)
    g = torch.Generator().manual_seed(seed + 1)
    xs = torch.randn(steps, batch, 3, 16, 16, generator=g)
    ys = torch.randint(0, 5, (steps, batch), generator=g)
    lrs, losses = [], []
    for s in range(steps):  # 3 warmup steps from 1e-6, then cosine to 1e-5
        lr = 1e-6 + (1e-3 - 1e-6) * s / 3 if s < 3 else 1e-5 + 0.5 * (1e-3 - 1e-5) * (
            1 + math.cos(math.pi * (s - 3) / (steps - 3)))
        for grp in opt.param_groups:
            grp["lr"] = lr
        opt.zero_grad()
        loss = F.cross_entropy(model(xs[s]), ys[s], label_smoothing=SMOOTH)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        lrs.append(lr)
        losses.append(loss.item())
    io = {"inputs": xs, "labels": ys.to(torch.int32), "lrs": torch.tensor(lrs, dtype=torch.float64),
          "losses": torch.tensor(losses, dtype=torch.float64)}
    for n, p in model.state_dict().items():
        io["final." + n] = p
    save_safetensors(os.path.join(OUT, "adamw.io.safetensors"), io)


grad_case("pre_gelu_cls", 1)
grad_case("post_relu_nofinal", 2, norm="post", act="relu", final_norm=False, norm_eps=1e-5)
grad_case("post_gelu_final", 3, norm="post")
grad_case("tanh_mean_nocls_nobias", 4, act="gelu_tanh", pool="mean", class_token=False, qkv_bias=False,
          final_norm=False)
grad_case("mean_cls_gray", 5, pool="mean", channels=1, image_size=12, patch=3, heads=2)
adamw_case()
print("grad_ref: wrote", len(os.listdir(OUT)), "files to", OUT)
