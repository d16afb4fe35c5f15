"""Study (2026-11-24, fourth session): QAT through the exact onnxruntime QDQ graph.

The exporter's QDQ model is rebuilt as a torch module (Conv, Add, Relu, Reshape, Q/DQ), its
INT8 weights and int32 biases as float parameters fake-quantized with their fixed per-channel
scales, its activation scales learnable (LSQ), trained against the FP32 student's embeddings
on UTKFace faces, and written back into the same graph. Measured and not wired in: see
quantize/reports/maskinv_mobilefacenet_tflite/README.md. Kept in history only (removed in the
next commit); run with PYTHONPATH set to the repo and MASKEDGE_DATA_ROOT.
"""
import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import nn

QMIN = {np.dtype("uint8"): 0, np.dtype("int8"): -128}
QMAX = {np.dtype("uint8"): 255, np.dtype("int8"): 127}


def fake_quant(x, s, zp, qmin, qmax):
    """Per-tensor fake quantization, straight-through inside the range, zero gradient outside."""
    xc = x.clamp((qmin - zp) * s, (qmax - zp) * s)
    return xc + (torch.round(xc * (1.0 / s)) * s - xc).detach()


def fake_quant_lsq(x, s, zp, qmin, qmax):
    """Per-tensor fake quantization with a learnable scale (LSQ gradients)."""
    xs = (x / s).clamp(qmin - zp, qmax - zp)
    return (xs + (torch.round(xs) - xs).detach()) * s


class QDQModule(nn.Module):
    def __init__(self, model: onnx.ModelProto, weight_range=(-64, 64), learn_act_scale=False):
        super().__init__()
        self.model = model
        self.init = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        self.nodes = list(model.graph.node)
        self.params = nn.ParameterDict()
        self.names = {}  # initializer name -> param key
        self.wq = {}  # dq output -> (param key, scale tensor, axis)
        self.act_scale = nn.ParameterDict()
        self.learn_act_scale = learn_act_scale
        self.wmin, self.wmax = weight_range
        for n in self.nodes:
            if n.op_type == "DequantizeLinear" and n.input[0] in self.init:
                q = self.init[n.input[0]]
                s = self.init[n.input[1]]
                axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
                shape = [1] * q.ndim
                if s.ndim:
                    shape[axis] = -1
                key = self._key(n.input[0])
                self.params[key] = nn.Parameter(torch.from_numpy(q.astype(np.float32) * s.reshape(shape)))
                self.wq[n.output[0]] = (key, torch.from_numpy(s.astype(np.float32)), axis, q.dtype)
            elif n.op_type == "Conv":
                for name in n.input[1:]:
                    if name in self.init:
                        key = self._key(name)
                        self.params[key] = nn.Parameter(torch.from_numpy(self.init[name].astype(np.float32)))
                        self.wq[name] = (key, None, None, None)
            elif n.op_type == "QuantizeLinear" and learn_act_scale:
                s = float(self.init[n.input[1]])
                self.act_scale[self._key(n.input[1])] = nn.Parameter(torch.tensor([s]))

    def _key(self, name):
        key = name.replace(".", "_")
        self.names[name] = key
        return key

    def _weight(self, name):
        key, scale, axis, dtype = self.wq[name]
        w = self.params[key]
        if scale is None or dtype == np.int32:
            return w
        return torch.fake_quantize_per_channel_affine(w, scale, torch.zeros_like(scale, dtype=torch.int32),
                                                      axis, self.wmin, self.wmax)

    def forward(self, x):
        env = {self.model.graph.input[0].name: x}
        for n in self.nodes:
            op = n.op_type
            if op == "QuantizeLinear":
                env[n.output[0]] = (env[n.input[0]], n.input[1], n.input[2])
            elif op == "DequantizeLinear":
                if n.output[0] in self.wq:
                    env[n.output[0]] = self._weight(n.output[0])
                    continue
                t, sname, zname = env[n.input[0]]
                zp = self.init[zname]
                qmin, qmax = QMIN[zp.dtype], QMAX[zp.dtype]
                if self.learn_act_scale:
                    s = self.act_scale[self.names[sname]]
                    env[n.output[0]] = fake_quant_lsq(t, s, int(zp), qmin, qmax)
                else:
                    env[n.output[0]] = fake_quant(t, float(self.init[sname]), int(zp), qmin, qmax)
            elif op == "Conv":
                a = {at.name: onnx.helper.get_attribute_value(at) for at in n.attribute}
                x_in = env[n.input[0]]
                w = env[n.input[1]] if n.input[1] in env else self._weight(n.input[1])
                b = None
                if len(n.input) > 2:
                    b = env[n.input[2]] if n.input[2] in env else self._weight(n.input[2])
                pads = list(a.get("pads", [0, 0, 0, 0]))
                if pads[:2] != pads[2:]:
                    x_in = F.pad(x_in, (pads[1], pads[3], pads[0], pads[2]))
                    pads = [0, 0, 0, 0]
                env[n.output[0]] = F.conv2d(x_in, w, b, stride=tuple(a.get("strides", [1, 1])),
                                            padding=tuple(pads[:2]), dilation=tuple(a.get("dilations", [1, 1])),
                                            groups=a.get("group", 1))
            elif op == "Add":
                env[n.output[0]] = env[n.input[0]] + env[n.input[1]]
            elif op == "Relu":
                env[n.output[0]] = F.relu(env[n.input[0]])
            elif op == "Reshape":
                shape = [int(v) for v in self.init[n.input[1]]]
                t = env[n.input[0]]
                shape = [t.shape[i] if v == 0 else v for i, v in enumerate(shape)]
                env[n.output[0]] = t.reshape(shape)
            else:
                raise NotImplementedError(op)
        return env[self.model.graph.output[0].name]

    @torch.no_grad()
    def export(self) -> onnx.ModelProto:
        """The same graph with the trained weights (and scales) written back."""
        model = onnx.ModelProto()
        model.CopyFrom(self.model)
        new = {}
        if self.learn_act_scale:
            for name, key in self.names.items():
                if key in self.act_scale:
                    new[name] = np.array(float(self.act_scale[key]), dtype=np.float32)
        scale_of = {**{k: v for k, v in self.init.items()}, **new}
        prod = {o: nd for nd in self.nodes for o in nd.output}
        for n in self.nodes:
            if n.op_type != "Conv":
                continue
            if n.input[1] in self.wq and self.wq[n.input[1]][1] is None:  # float conv
                for name in n.input[1:]:
                    new[name] = self.params[self.names[name]].numpy()
                continue
            wdq = prod[n.input[1]]
            key, s, axis, _ = self.wq[n.input[1]]
            w = self.params[key]
            shape = [1] * w.ndim
            shape[axis] = -1
            q = torch.clamp(torch.round(w / s.reshape(shape)), self.wmin, self.wmax).numpy().astype(np.int8)
            new[wdq.input[0]] = q
            if len(n.input) > 2:
                bdq = prod[n.input[2]]
                in_dq = prod[n.input[0]]
                s_in = float(scale_of[in_dq.input[1]])
                bias_scale = (s_in * s.numpy()).astype(np.float32)
                b = self.params[self.wq[n.input[2]][0]].numpy()
                new[bdq.input[0]] = np.round(b / bias_scale).astype(np.int32)
                new[bdq.input[1]] = bias_scale
        for init in model.graph.initializer:
            if init.name in new:
                init.CopyFrom(numpy_helper.from_array(np.asarray(new[init.name]).astype(
                    numpy_helper.to_array(init).dtype).reshape(numpy_helper.to_array(init).shape), init.name))
        return model


import argparse, time
import onnxruntime as ort
from quantize.student import load_student
from quantize.calibration import load_calibration, load_training_faces, CalibrationConfig
p = argparse.ArgumentParser()
p.add_argument('--lr', type=float, default=1e-5); p.add_argument('--steps', type=int, default=300)
p.add_argument('--batch', type=int, default=32); p.add_argument('--faces', type=int, default=2048)
p.add_argument('--eval-every', type=int, default=25); p.add_argument('--out', default='/tmp/exp/ft')
p.add_argument('--src', default='runs/quantize/maskinv_ptq_split_bc2/maskinv_mobilefacenet_tflite.int8-ptq.onnx')
p.add_argument('--act-scale', action='store_true'); p.add_argument('--bias-lr-mult', type=float, default=1.0)
a = p.parse_args()
torch.set_num_threads(2); torch.manual_seed(0)
st = load_student('runs/distill/maskinv_mobilefacenet_tflite/best.pt')
cal = load_calibration(CalibrationConfig(), progress=False)
check, calib = cal.check_faces(), cal.calibration_faces()
evalx = {'check': st.to_tensor(check).numpy(), 'calib': st.to_tensor(calib).numpy()}
evalref = {'check': st.embed(check), 'calib': st.embed(calib)}
un, ma = load_training_faces(cal, a.faces, progress=False)
faces = np.concatenate([un, ma]); faces = np.concatenate([faces, faces[:, :, ::-1]])
X = st.to_tensor(faces); T = torch.from_numpy(st.embed(faces))
print('training faces', len(X), flush=True)
mod = QDQModule(onnx.load(a.src), learn_act_scale=a.act_scale)
def ev(tag):
    m = mod.export(); path = f'{a.out}.onnx'; onnx.save(m, path)
    s = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    r = {}
    for k in evalx:
        o = np.concatenate([s.run(None, {'input': evalx[k][i:i+64]})[0] for i in range(0, len(evalx[k]), 64)])
        o /= np.linalg.norm(o, axis=1, keepdims=True); c = (o * evalref[k]).sum(1)
        r[k] = (round(float(c.mean()), 5), round(float(np.percentile(c, 1)), 5), round(float(c.min()), 5))
    print(tag, r, flush=True); return r
ev('step 0')
bias = [p for k, p in mod.params.items() if p.ndim == 1]; rest = [p for k, p in mod.params.items() if p.ndim != 1]
groups = [{'params': rest, 'lr': a.lr}, {'params': bias, 'lr': a.lr * a.bias_lr_mult}]
if a.act_scale: groups.append({'params': list(mod.act_scale.parameters()), 'lr': a.lr})
opt = torch.optim.Adam(groups)
sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, a.steps)
g = torch.Generator().manual_seed(1); losses = []; t0 = time.time()
for step in range(1, a.steps + 1):
    rows = torch.randint(0, len(X), (a.batch,), generator=g)
    out = torch.nn.functional.normalize(mod(X[rows]), dim=1)
    loss = (1 - (out * T[rows]).sum(1)).mean()
    opt.zero_grad(); loss.backward(); opt.step(); sched.step(); losses.append(loss.item())
    if step % a.eval_every == 0:
        print(f'step {step} loss {np.mean(losses[-a.eval_every:]):.5f} {time.time()-t0:.0f}s', flush=True)
        ev(f'step {step}')
