"""Reference checkpoints for vitkit's importer (io/pth, io/layouts, io/keymap,
io/arch_infer), written with torch.save by Debian's PyTorch 1.13 into
OUTDIR/import/:

  <case>.pth (or .bin)      a model's weights in some naming layout
  <case>.io.safetensors     images (N, C, H, W) float32 and PyTorch's logits
  cases.json                per case: file, --arch/--map/--config flags, notes
  malicious/*.pth           pickles that would run code (each payload would
                            create OUTDIR/import/pwned_<name>); malicious.json
                            names the global each must be refused for
  corrupt/*                 broken files; corrupt.json gives the expected error

Nothing here unpickles anything: the payloads are only written.
Usage: /usr/bin/python3 tests/ref/import_ref.py OUTDIR
"""
import collections
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import zipfile

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

torch.set_num_threads(2)
if len(sys.argv) < 2:
    sys.exit(f"usage: {sys.argv[0]} OUTDIR")
OUT = os.path.join(sys.argv[1], "import")
shutil.rmtree(OUT, ignore_errors=True)
for sub in ("", "malicious", "corrupt"):
    os.makedirs(os.path.join(OUT, sub), exist_ok=True)
CASES, MALICIOUS, CORRUPT = [], [], []


# ---------------------------------------------------------------- helpers

def save_safetensors(path, tensors):
    """name -> float32 tensor, as safetensors (header JSON padded to 8 bytes)."""
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        raw = t.detach().to(torch.float32).contiguous().numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def randomize(model, seed):
    """Random weights with activations of order one: matrices N(0, 1/fan_in),
    norm weights 1 + N(0, 0.1), biases N(0, 0.1), embeddings N(0, 0.5)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            r = torch.randn(p.shape, generator=g)
            last = name.split(".")[-1]
            if p.dim() == 1 and last == "weight":
                p.copy_(1 + 0.1 * r)
            elif p.dim() == 1:
                p.copy_(0.1 * r)
            elif p.dim() == 3 and p.shape[0] == 1:  # class token, position embedding
                p.copy_(0.5 * r)
            else:
                p.copy_(r / p[0].numel() ** 0.5)
    model.eval()
    return model


def write_case(name, model, file, image, channels, seed, flags, n=3, save=None):
    """Saves model (through save(path) or torch.save of its state dict), its
    inputs and logits, and records the case in cases.json."""
    path = os.path.join(OUT, file)
    if save:
        save(path)
    else:
        torch.save(model.state_dict(), path)
    g = torch.Generator().manual_seed(seed + 1000)
    x = torch.randn(n, channels, image, image, generator=g)
    with torch.no_grad():
        y = model.float()(x)
    save_safetensors(os.path.join(OUT, name + ".io.safetensors"), {"images": x, "logits": y})
    np.save(os.path.join(OUT, name + ".images.npy"), x.numpy())
    CASES.append({"name": name, "file": file, "flags": flags})


# ---------------------------------------------------------------- models

class Mlp(nn.Module):  # timm's names
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class TimmAttention(nn.Module):
    def __init__(self, dim, heads, qkv_bias):
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv, self.proj = nn.Linear(dim, 3 * dim, bias=qkv_bias), nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        a = ((q @ k.transpose(-2, -1)) * self.scale).softmax(-1)
        return self.proj((a @ v).transpose(1, 2).reshape(B, N, C))


class TimmBlock(nn.Module):
    def __init__(self, dim, heads, mlp, qkv_bias):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim, eps=1e-6), TimmAttention(dim, heads, qkv_bias)
        self.norm2, self.mlp = nn.LayerNorm(dim, eps=1e-6), Mlp(dim, mlp)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, channels, dim, patch):
        super().__init__()
        self.proj = nn.Conv2d(channels, dim, patch, patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class TimmViT(nn.Module):
    """timm's VisionTransformer (global_pool='token'), in plain PyTorch."""

    def __init__(self, image, patch, dim, depth, heads, mlp, classes, qkv_bias=True):
        super().__init__()
        self.patch_embed = PatchEmbed(3, dim, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, (image // patch) ** 2 + 1, dim))
        self.blocks = nn.ModuleList(TimmBlock(dim, heads, mlp, qkv_bias) for _ in range(depth))
        self.norm, self.head = nn.LayerNorm(dim, eps=1e-6), nn.Linear(dim, classes)

    def forward(self, x):
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1) + self.pos_embed
        for b in self.blocks:
            x = b(x)
        return self.head(self.norm(x)[:, 0])


class HfSelfAttention(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.query, self.key, self.value = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)


class Dense(nn.Module):
    def __init__(self, i, o):
        super().__init__()
        self.dense = nn.Linear(i, o)


class HfAttention(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.attention, self.output = HfSelfAttention(dim), Dense(dim, dim)


class HfLayer(nn.Module):
    def __init__(self, dim, heads, mlp):
        super().__init__()
        self.heads = heads
        self.attention = HfAttention(dim)
        self.intermediate, self.output = Dense(dim, mlp), Dense(mlp, dim)
        self.layernorm_before = nn.LayerNorm(dim, eps=1e-12)
        self.layernorm_after = nn.LayerNorm(dim, eps=1e-12)

    def forward(self, x):
        B, N, C = x.shape
        h = self.layernorm_before(x)
        sa = self.attention.attention
        split = lambda t: t.view(B, N, self.heads, C // self.heads).transpose(1, 2)
        q, k, v = split(sa.query(h)), split(sa.key(h)), split(sa.value(h))
        a = (q @ k.transpose(-1, -2) / (C // self.heads) ** 0.5).softmax(-1)
        x = x + self.attention.output.dense((a @ v).transpose(1, 2).reshape(B, N, C))
        h = F.gelu(self.intermediate.dense(self.layernorm_after(x)))
        return x + self.output.dense(h)


class HfEncoder(nn.Module):
    def __init__(self, dim, depth, heads, mlp):
        super().__init__()
        self.layer = nn.ModuleList(HfLayer(dim, heads, mlp) for _ in range(depth))


class HfPatch(nn.Module):
    def __init__(self, dim, patch):
        super().__init__()
        self.projection = nn.Conv2d(3, dim, patch, patch)


class HfEmbeddings(nn.Module):
    def __init__(self, image, patch, dim):
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.position_embeddings = nn.Parameter(torch.zeros(1, (image // patch) ** 2 + 1, dim))
        self.patch_embeddings = HfPatch(dim, patch)


class HfViTModel(nn.Module):
    def __init__(self, image, patch, dim, depth, heads, mlp):
        super().__init__()
        self.embeddings = HfEmbeddings(image, patch, dim)
        self.encoder = HfEncoder(dim, depth, heads, mlp)
        self.layernorm = nn.LayerNorm(dim, eps=1e-12)


class HfViTForImageClassification(nn.Module):
    """transformers' ViTForImageClassification's names and computation."""

    def __init__(self, image, patch, dim, depth, heads, mlp, classes):
        super().__init__()
        self.vit, self.classifier = HfViTModel(image, patch, dim, depth, heads, mlp), nn.Linear(dim, classes)

    def forward(self, x):
        e = self.vit.embeddings
        x = e.patch_embeddings.projection(x).flatten(2).transpose(1, 2)
        x = torch.cat([e.cls_token.expand(x.shape[0], -1, -1), x], 1) + e.position_embeddings
        for layer in self.vit.encoder.layer:
            x = layer(x)
        return self.classifier(self.vit.layernorm(x)[:, 0])


class EncoderViT(nn.Module):
    """A ViT built on nn.TransformerEncoder; names (patch, cls, pos, encoder, head)
    vary to exercise the torch-encoder layout's conventions."""

    def __init__(self, image, patch, dim, depth, heads, mlp, classes, norm_first, activation, cls_token, pool,
                 names):
        super().__init__()
        self.names, self.pool = names, pool
        setattr(self, names["patch"], nn.Conv2d(3, dim, patch, patch))
        tokens = (image // patch) ** 2 + (1 if cls_token else 0)
        self.has_cls = cls_token
        if cls_token:
            setattr(self, names["cls"], nn.Parameter(torch.zeros(1, 1, dim)))
        setattr(self, names["pos"], nn.Parameter(torch.zeros(1, tokens, dim)))
        layer = nn.TransformerEncoderLayer(dim, heads, mlp, dropout=0.0, activation=activation, batch_first=True,
                                           norm_first=norm_first)
        setattr(self, names["encoder"], nn.TransformerEncoder(layer, depth, enable_nested_tensor=False))
        setattr(self, names["head"], nn.Linear(dim, classes))

    def forward(self, x):
        n = self.names
        x = getattr(self, n["patch"])(x).flatten(2).transpose(1, 2)
        if self.has_cls:
            x = torch.cat([getattr(self, n["cls"]).expand(x.shape[0], -1, -1), x], 1)
        x = getattr(self, n["encoder"])(x + getattr(self, n["pos"]))
        x = x[:, 0] if self.pool == "cls" else x[:, 1 if self.has_cls else 0:].mean(1)
        return getattr(self, n["head"])(x)


class CustomBlock(nn.Module):
    def __init__(self, dim, heads, mlp):
        super().__init__()
        self.heads = heads
        self.ln_a, self.ln_b = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.q_proj, self.k_proj = nn.Linear(dim, dim, bias=False), nn.Linear(dim, dim, bias=False)
        self.v_proj, self.o_proj = nn.Linear(dim, dim, bias=False), nn.Linear(dim, dim)
        self.ff = nn.Sequential(nn.Linear(dim, mlp), nn.GELU(), nn.Linear(mlp, dim))
        self.register_buffer("rel_scale", torch.ones(heads))  # unused by the forward; dropped by the key map

    def forward(self, x):
        B, N, C = x.shape
        h = self.ln_a(x)
        split = lambda t: t.view(B, N, self.heads, C // self.heads).transpose(1, 2)
        q, k, v = split(self.q_proj(h)), split(self.k_proj(h)), split(self.v_proj(h))
        out = (q @ k.transpose(-1, -2) / (C // self.heads) ** 0.5).softmax(-1) @ v
        x = x + self.o_proj(out.transpose(1, 2).reshape(B, N, C))
        return x + self.ff(self.ln_b(x))


class CustomViT(nn.Module):
    """A made-up naming (stem, tokens.cls, trunk.N.q_proj, ...): loaded through
    tests/data/custom_vit.map."""

    def __init__(self, image, patch, dim, depth, heads, mlp, classes):
        super().__init__()
        self.stem = nn.Conv2d(3, dim, patch, patch)
        self.tokens = nn.Module()
        self.tokens.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.tokens.pos = nn.Parameter(torch.zeros(1, (image // patch) ** 2 + 1, dim))
        self.trunk = nn.ModuleList(CustomBlock(dim, heads, mlp) for _ in range(depth))
        self.final_ln, self.classifier = nn.LayerNorm(dim), nn.Linear(dim, classes)
        self.register_buffer("steps", torch.tensor(1234, dtype=torch.int64))

    def forward(self, x):
        x = self.stem(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.tokens.cls.expand(x.shape[0], -1, -1), x], 1) + self.tokens.pos
        for b in self.trunk:
            x = b(x)
        return self.classifier(self.final_ln(x)[:, 0])


def small_tv():
    return torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4,
                                                hidden_dim=64, mlp_dim=128, num_classes=10)


# ---------------------------------------------------------------- cases

HEADS4 = "heads=4"

# torchvision: a bare state dict, a checkpoint dict, the same weights as
# safetensors without metadata, and a state dict of views (non-contiguous,
# strided, offset, one storage shared by several tensors).
tv = randomize(small_tv(), 1)
write_case("tv_sd", tv, "tv_sd.pth", 32, 3, 1, ["--arch", "torchvision", "--config", HEADS4])
write_case("tv_ckpt", tv, "tv_ckpt.pth", 32, 3, 1, ["--config", HEADS4],
           save=lambda p: torch.save({"model": tv.state_dict(), "epoch": 3,
                                      "optimizer": {"lr": 0.001, "betas": (0.9, 0.999), "step": [1, 2, 3]}}, p))
write_case("tv_st", tv, "tv_nometa.safetensors", 32, 3, 1, ["--config", HEADS4],
           save=lambda p: save_safetensors(p, tv.state_dict()))


def views_state_dict(model):
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    D, L = 64, "encoder.layers.encoder_layer_0."
    # A transposed view: stride (1, K).
    w = sd["heads.head.weight"]
    sd["heads.head.weight"] = w.t().contiguous().t()
    # Three tensors in one storage, at offsets 0, D, 2D.
    buf = torch.cat([sd[L + "ln_1.weight"], sd[L + "ln_1.bias"], sd[L + "ln_2.weight"]])
    sd[L + "ln_1.weight"], sd[L + "ln_1.bias"], sd[L + "ln_2.weight"] = buf[:D], buf[D:2 * D], buf[2 * D:]
    # Every other row of a larger matrix: stride (2D, 1).
    m0 = sd[L + "mlp.0.weight"]
    big = torch.zeros(2 * m0.shape[0], D)
    big[::2] = m0
    sd[L + "mlp.0.weight"] = big[::2]
    # Every other column, starting at 1: offset 1, stride (2D, 2).
    qkv = sd[L + "self_attention.in_proj_weight"]
    wide = torch.zeros(3 * D, 2 * D)
    wide[:, 1::2] = qkv
    sd[L + "self_attention.in_proj_weight"] = wide[:, 1::2]
    assert not sd["heads.head.weight"].is_contiguous() and not sd[L + "mlp.0.weight"].is_contiguous()
    assert sd[L + "ln_1.bias"].storage_offset() == D
    return sd


write_case("tv_views", tv, "tv_views.pth", 32, 3, 1, ["--config", HEADS4],
           save=lambda p: torch.save(views_state_dict(tv), p))

# timm: under "state_dict" in a checkpoint dict; the same in fp16.
timm = randomize(TimmViT(32, 4, 48, 3, 3, 96, 7), 2)
write_case("timm", timm, "timm.pth", 32, 3, 2, ["--arch", "timm", "--config", "heads=3"],
           save=lambda p: torch.save({"state_dict": timm.state_dict(), "epoch": 10, "arch": "vit_tiny"}, p))
timm16 = randomize(TimmViT(32, 4, 48, 3, 3, 96, 7), 3).half()
write_case("timm_f16", timm16, "timm_f16.pth", 32, 3, 3, ["--arch", "timm", "--config", "heads=3"])

# transformers' ViTForImageClassification names (pytorch_model.bin), and in bf16.
hf = randomize(HfViTForImageClassification(32, 8, 64, 2, 4, 128, 5), 4)
write_case("hf", hf, "hf_pytorch_model.bin", 32, 3, 4, ["--arch", "hf", "--config", HEADS4])
hf16 = randomize(HfViTForImageClassification(32, 8, 64, 2, 4, 128, 5), 5).to(torch.bfloat16)
write_case("hf_bf16", hf16, "hf_bf16.bin", 32, 3, 5, ["--arch", "hf", "--config", HEADS4])

# nn.TransformerEncoder, post-norm (the default), ReLU, class token, no final norm.
enc = randomize(EncoderViT(32, 8, 64, 2, 4, 128, 10, norm_first=False, activation="relu", cls_token=True,
                           pool="cls", names=dict(patch="patch_embed", cls="cls_token", pos="pos_embed",
                                                  encoder="encoder", head="head")), 6)
write_case("enc_post_relu", enc, "enc_post_relu.pth", 32, 3, 6,
           ["--arch", "torch-encoder", "--config", "heads=4,norm=post,act=relu,pool=cls"])

# Pre-norm, tanh-GELU, mean pooling, no class token, no final norm.
gelu_tanh = lambda x: F.gelu(x, approximate="tanh")
pre = randomize(EncoderViT(32, 8, 64, 2, 4, 128, 10, norm_first=True, activation=gelu_tanh, cls_token=False,
                           pool="mean", names=dict(patch="patch_embedding", cls=None, pos="pos_embedding",
                                                   encoder="transformer", head="fc")), 7)
write_case("enc_pre_tanh_mean", pre, "enc_pre_tanh_mean.pth", 32, 3, 7,
           ["--arch", "torch-encoder", "--config", "heads=4,norm=pre,act=gelu_tanh,pool=mean"])

# A made-up naming through a key map (q, k, v separate and packed; buffers dropped).
custom = randomize(CustomViT(32, 8, 64, 2, 4, 128, 6), 8)
write_case("custom_map", custom, "custom.pth", 32, 3, 8,
           ["--map", "@SOURCE@/tests/data/custom_vit.map", "--config",
            "heads=4,norm=pre,act=gelu,pool=cls,norm_eps=1e-5"],
           save=lambda p: torch.save({"model_state_dict": custom.state_dict(), "epoch": 5, "loss": 0.25,
                                      "optimizer_state_dict": {"state": {}, "param_groups": [
                                          {"lr": 0.1, "params": [0, 1, 2]}]}}, p))


# ---------------------------------------------------------------- malicious

def torch_zip(path, pkl, storages=None, prefix="archive"):
    """A zip laid out as torch.save writes it, around raw pickle bytes."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr(f"{prefix}/data.pkl", pkl)
        for k, b in (storages or {}).items():
            z.writestr(f"{prefix}/data/{k}", b)
        z.writestr(f"{prefix}/version", "3\n")


def marker(name):
    return os.path.join(OUT, "pwned_" + name)


def payload_command(name):
    return "touch " + marker(name)


class Reduce:
    """An object that pickles as fn(*args) (REDUCE); pickling it runs nothing."""

    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def malicious(name, pkl, expect):
    torch_zip(os.path.join(OUT, "malicious", name + ".pth"), pkl)
    MALICIOUS.append({"name": name, "file": f"malicious/{name}.pth", "expect": expect, "marker": marker(name)})


malicious("posix_system", pickle.dumps(Reduce(os.system, (payload_command("posix_system"),)), protocol=2),
          "posix.system")
malicious("builtins_eval",
          pickle.dumps(Reduce(eval, (f"open({marker('builtins_eval')!r}, 'w').write('x')",)), protocol=2,
                       fix_imports=False), "builtins.eval")
malicious("builtin_exec_p4",
          pickle.dumps(Reduce(exec, (f"open({marker('builtin_exec_p4')!r}, 'w').write('x')",)), protocol=4),
          "builtins.exec")
cmd = payload_command("os_system").encode()
malicious("os_system", b"\x80\x02cos\nsystem\nq\x00X" + struct.pack("<I", len(cmd)) + cmd + b"\x85R.", "os.system")
malicious("subprocess_popen",
          pickle.dumps(Reduce(subprocess.Popen, (["touch", marker("subprocess_popen")],)), protocol=2,
                       fix_imports=False),
          "subprocess.Popen")
# A REDUCE inside a tuple inside a state dict, after a good tensor entry.
nested_sd = collections.OrderedDict(w=torch.zeros(2), x=(1, Reduce(os.system, (payload_command("nested"),))))
nested_path = os.path.join(OUT, "malicious", "nested.pth")
torch.save({"model": nested_sd, "epoch": 1}, nested_path)
MALICIOUS.append({"name": "nested", "file": "malicious/nested.pth", "expect": "posix.system",
                  "marker": marker("nested")})
# STACK_GLOBAL with its names assembled from the memo.
cmd = payload_command("stack_global").encode()
sg = (b"\x80\x04\x95" + struct.pack("<Q", 0) +
      b"\x8c\x05posix\x94" + b"\x8c\x06system\x94" + b"h\x00h\x01\x93" +
      b"\x8c" + bytes([len(cmd)]) + cmd + b"\x85R.")
malicious("stack_global", sg, "posix.system")
# Protocol 0 INST (builds an instance by name).
cmd = payload_command("inst").encode()
malicious("inst", b"(S'" + cmd + b"'\nios\nsystem\n.", "os.system")
# A known exploit path through torch itself.
malicious("torch_load_from_bytes", b"\x80\x02ctorch.storage\n_load_from_bytes\nC\x01x\x85R.",
          "torch.storage._load_from_bytes")
# A tensor whose storage type is not a storage class.
fake = (b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n(X\x07\x00\x00\x00storageq\x00cposix\nsystem\n"
        b"X\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x01tQ.")
malicious("storage_type", fake, "posix.system")
# A whole pickled nn.Module.
mod_path = os.path.join(OUT, "malicious", "whole_module.pth")
torch.save(small_tv(), mod_path)
MALICIOUS.append({"name": "whole_module", "file": "malicious/whole_module.pth",
                  "expect": "torchvision.models.vision_transformer.VisionTransformer", "marker": marker("none")})


# ---------------------------------------------------------------- corrupt

class FakeStorage:
    def __init__(self, key, numel, stype):
        self.key, self.numel, self.stype = key, numel, stype


class FakeTensor:
    """Pickles as _rebuild_tensor_v2 of a FakeStorage, with any view."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def __reduce__(self):
        return torch._utils._rebuild_tensor_v2, (self.storage, self.offset, tuple(self.size), tuple(self.stride),
                                                  False, collections.OrderedDict())


def fake_pickle(obj):
    import io
    buf = io.BytesIO()
    p = pickle.Pickler(buf, protocol=2)
    p.persistent_id = lambda o: ("storage", o.stype, o.key, "cpu", o.numel) if isinstance(o, FakeStorage) else None
    p.dump(obj)
    return buf.getvalue()


def corrupt(name, expect, data=None, pkl=None, storages=None):
    path = os.path.join(OUT, "corrupt", name)
    if pkl is not None:
        torch_zip(path, pkl, storages)
    else:
        with open(path, "wb") as f:
            f.write(data)
    CORRUPT.append({"name": name, "file": f"corrupt/{name}", "expect": expect})


good = open(os.path.join(OUT, "tv_sd.pth"), "rb").read()
with zipfile.ZipFile(os.path.join(OUT, "tv_sd.pth")) as z:  # the raw pickle, for mutation tests
    open(os.path.join(OUT, "tv_sd.data.pkl"), "wb").write(z.read(z.namelist()[0].split("/")[0] + "/data.pkl"))
corrupt("truncated.pth", "zip", data=good[: len(good) // 2])
corrupt("empty.pth", "not a PyTorch checkpoint", data=b"")
# Protocol 2 with Python 2 names: subprocess.Popen becomes commands.Popen.
malicious("commands_popen", pickle.dumps(Reduce(subprocess.Popen, (["touch", marker("commands_popen")],)),
                                         protocol=2), "commands.Popen")
corrupt("not_zip.pth", "not a PyTorch checkpoint", data=b"hello, this is not a checkpoint\n" * 4)
with zipfile.ZipFile(os.path.join(OUT, "tv_sd.pth")) as zin:
    names = zin.namelist()
    prefix = names[0].split("/")[0]

    def rewrite(name, keep):
        path = os.path.join(OUT, "corrupt", name)
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zout:
            for n in names:
                b = keep(n, zin.read(n))
                if b is not None:
                    zout.writestr(n, b)

    rewrite("missing_entry.pth", lambda n, b: None if n == f"{prefix}/data/3" else b)
    CORRUPT.append({"name": "missing_entry.pth", "file": "corrupt/missing_entry.pth", "expect": "data/3"})
    rewrite("size_mismatch.pth", lambda n, b: b[:-4] if n == f"{prefix}/data/0" else b)
    CORRUPT.append({"name": "size_mismatch.pth", "file": "corrupt/size_mismatch.pth", "expect": "data/0"})
    rewrite("no_pickle.pth", lambda n, b: None if n.endswith("data.pkl") else b)
    CORRUPT.append({"name": "no_pickle.pth", "file": "corrupt/no_pickle.pth", "expect": "data.pkl"})
    rewrite("bad_pickle.pth", lambda n, b: b[: len(b) // 2] if n.endswith("data.pkl") else b)
    CORRUPT.append({"name": "bad_pickle.pth", "file": "corrupt/bad_pickle.pth", "expect": "truncated pickle"})

st = FakeStorage("0", 10, torch.FloatStorage)
raw10 = struct.pack("<10f", *range(10))
corrupt("offset_past.pth", "reaches element", pkl=fake_pickle({"w": FakeTensor(st, 100, [2], [1])},),
        storages={"0": raw10})
corrupt("stride_past.pth", "reaches element", pkl=fake_pickle({"w": FakeTensor(st, 0, [4, 4], [4, 1])}),
        storages={"0": raw10})
corrupt("numel_lie.pth", "holds 40 bytes", pkl=fake_pickle({"w": FakeTensor(FakeStorage("0", 1000, torch.FloatStorage),
                                                                             0, [10], [1])}),
        storages={"0": raw10})
corrupt("no_tensors.pth", "no tensors found", pkl=fake_pickle({"epoch": 3, "optimizer": {"lr": 0.1}}))
corrupt("list_root.pth", "not a state dict", pkl=fake_pickle([1, 2, 3]))
legacy = os.path.join(OUT, "corrupt", "legacy.pth")
torch.save(tv.state_dict(), legacy, _use_new_zipfile_serialization=False)
CORRUPT.append({"name": "legacy.pth", "file": "corrupt/legacy.pth", "expect": "legacy"})
ts = os.path.join(OUT, "corrupt", "torchscript.pt")
torch.jit.save(torch.jit.script(nn.Linear(2, 2)), ts)
CORRUPT.append({"name": "torchscript.pt", "file": "corrupt/torchscript.pt", "expect": "TorchScript"})

# Good hand-built checkpoints for the reader's own checks: every supported dtype,
# shared storages, zero-size and broadcast views.
ints = {"i8": (torch.CharStorage, "<4b", [-1, 2, -3, 4]), "u8": (torch.ByteStorage, "<4B", [1, 2, 3, 250]),
        "i16": (torch.ShortStorage, "<4h", [-300, 2, 3, 4]), "i32": (torch.IntStorage, "<4i", [1, -2, 3, 70000]),
        "i64": (torch.LongStorage, "<4q", [1, 2, -3, 2 ** 40]), "f64": (torch.DoubleStorage, "<4d", [0.5, 1, 2, 3]),
        "bool": (torch.BoolStorage, "<4?", [True, False, True, True])}
sd, storages = collections.OrderedDict(), {}
for i, (name, (stype, fmt, vals)) in enumerate(ints.items()):
    storages[str(i)] = struct.pack(fmt, *vals)
    sd[name] = FakeTensor(FakeStorage(str(i), 4, stype), 0, [2, 2], [1, 2])  # transposed 2x2
bstore = FakeStorage("b", 3, torch.FloatStorage)
storages["b"] = struct.pack("<3f", 1.5, 2.5, 3.5)
sd["broadcast"] = FakeTensor(bstore, 1, [3, 2], [0, 1])  # rows of [2.5, 3.5]
sd["empty"] = FakeTensor(bstore, 3, [0, 5], [5, 1])
torch_zip(os.path.join(OUT, "dtypes.pth"), fake_pickle(sd), storages, prefix="weird_name")

with open(os.path.join(OUT, "cases.json"), "w") as f:
    json.dump(CASES, f, indent=1)
with open(os.path.join(OUT, "malicious.json"), "w") as f:
    json.dump(MALICIOUS, f, indent=1)
with open(os.path.join(OUT, "corrupt.json"), "w") as f:
    json.dump(CORRUPT, f, indent=1)
print(f"import_ref: {len(CASES)} cases, {len(MALICIOUS)} malicious, {len(CORRUPT)} corrupt files in {OUT}")
