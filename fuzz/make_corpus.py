"""Writes the small seed corpus of the libFuzzer harnesses into fuzz/corpus/
(committed; rerun only to change the seeds): /usr/bin/python3 fuzz/make_corpus.py"""
import collections
import gzip
import io
import json
import os
import pickle
import struct
import zipfile

import torch

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def put(sub, name, data):
    os.makedirs(os.path.join(HERE, sub), exist_ok=True)
    with open(os.path.join(HERE, sub, name), "wb") as f:
        f.write(data)


# ---- pth: whole torch.save archives, and bare pickles for the harness to wrap
# (storages data/0: 64 bytes, data/1: 16, data/2: 0, data/3: 256; see fuzz_pth.cpp).
def saved(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


torch.manual_seed(0)
put("pth", "state_dict.pth", saved(collections.OrderedDict(w=torch.randn(2, 3), b=torch.zeros(3).half())))
w = torch.randn(3, 2)
put("pth", "checkpoint_views.pth", saved({"model": {"wt": w.t(), "row": w[1], "bf": torch.ones(2).bfloat16()},
                                          "epoch": 3}))


class Storage:
    def __init__(self, key, numel, stype):
        self.key, self.numel, self.stype = key, numel, stype


class View:
    def __init__(self, storage, offset, size, stride, param=False):
        self.storage, self.offset, self.size, self.stride, self.param = storage, offset, size, stride, param

    def __reduce__(self):
        t = (torch._utils._rebuild_tensor_v2, (self.storage, self.offset, tuple(self.size), tuple(self.stride),
                                               False, collections.OrderedDict()))
        return t


def pkl(obj, protocol=2):
    buf = io.BytesIO()
    p = pickle.Pickler(buf, protocol=protocol)
    p.persistent_id = lambda o: ("storage", o.stype, o.key, "cpu", o.numel) if isinstance(o, Storage) else None
    p.dump(obj)
    return buf.getvalue()


s0, s1, s3 = Storage("0", 16, torch.FloatStorage), Storage("1", 8, torch.HalfStorage), Storage("3", 32,
                                                                                              torch.LongStorage)
hf = collections.OrderedDict()
for part in ("query", "key", "value"):
    hf[f"vit.encoder.layer.0.attention.attention.{part}.weight"] = View(s0, 0, [2, 2], [1, 2])
hf["classifier.weight"] = View(s1, 2, [2, 3], [3, 1])
hf["count"] = View(s3, 1, [4], [8])
put("pth", "hf_qkv.pkl", pkl(hf))
put("pth", "checkpoint.pkl", pkl({"state_dict": collections.OrderedDict(a=View(s0, 4, [3, 4], [0, 1])),
                                  "epoch": 7, "args": [1.5, None, True, "x", b"y"]}, protocol=4))
put("pth", "refused.pkl", b"\x80\x02cposix\nsystem\nX\x04\x00\x00\x00true\x85R.")

# ---- safetensors
def safetensors(tensors, metadata=None):
    header, blobs, off = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


put("safetensors", "two.safetensors", safetensors({"a": ("F32", [2, 2], struct.pack("<4f", 1, 2, 3, 4)),
                                                   "b": ("F16", [3], struct.pack("<3e", 1, -2, 0.5))},
                                                  {"vitkit.config": "{\"dim\": 4}"}))
put("safetensors", "ints.safetensors", safetensors({"i": ("I64", [2], struct.pack("<2q", 1, -1)),
                                                    "z": ("BF16", [0, 4], b""),
                                                    "u": ("U8", [], b"\x07")}))

# ---- key maps (first byte odd: a key map; even: tensor names, one a line)
here_map = os.path.join(os.path.dirname(HERE), "..", "tests", "data", "custom_vit.map")
put("keymap", "custom.map", b"\x01" + open(here_map, "rb").read())
put("keymap", "packing.map", b"\x01# q, k, v\n(.*)\\.(q|k|v)\\.w -> $1.in_proj_weight[$2]\nx\\..* -> -\n")
put("keymap", "timm_names.txt", b"\x00" + b"\n".join(n.encode() for n in [
    "patch_embed.proj.weight", "cls_token", "pos_embed", "blocks.0.norm1.weight", "blocks.0.attn.qkv.weight",
    "blocks.0.mlp.fc2.bias", "norm.bias", "head.weight"]))
put("keymap", "hf_names.txt", b"\x00" + b"\n".join(n.encode() for n in [
    "module.vit.encoder.layer.0.attention.attention.query.weight",
    "module.vit.encoder.layer.0.attention.attention.key.weight",
    "module.vit.encoder.layer.0.attention.attention.value.weight", "module.classifier.bias"]))

# ---- IDX
idx3 = struct.pack(">BBBBIII", 0, 0, 8, 3, 2, 3, 3) + bytes(range(18))
idx1 = struct.pack(">BBBBI", 0, 0, 8, 1, 4) + bytes([1, 0, 9, 3])
put("idx", "images.idx3", idx3)
put("idx", "labels.idx1", idx1)
put("idx", "images.idx3.gz", gzip.compress(idx3, mtime=0))
print("corpus written to", HERE)
