"""``backbone.params.checkpointing``: the same outputs, gradients and BatchNorm statistics as without it, fewer
tensors kept for the backward, the same state_dict keys."""
from __future__ import annotations

import pytest
import torch

from tests.conftest_models import backbone


def step(bb, x):
    """One training step's gradients (a loss on every level) and the number of tensors autograd kept."""
    saved = [0]

    def keep(t):
        saved[0] += 1
        return t

    bb.train()
    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        out = bb(x)
    loss = sum((f.float() * torch.linspace(0, 1, f.numel()).view_as(f)).sum() for f in out.values())
    loss.backward()
    return out, {n: p.grad.clone() for n, p in bb.named_parameters() if p.grad is not None}, saved[0]


@pytest.mark.parametrize("name", ["resnet18", "densenet121", "vgg16"])
def test_checkpointed_backbone_gives_the_same_gradients(name):
    torch.manual_seed(0)
    plain = backbone(name, size=32)
    ckpt = backbone(name, size=32, checkpointing=True)
    ckpt.load_state_dict(plain.state_dict())
    assert list(ckpt.state_dict()) == list(plain.state_dict())
    x = torch.randn(2, 3, 32, 32)
    out_p, grads_p, saved_p = step(plain, x)
    out_c, grads_c, saved_c = step(ckpt, x)
    for level in out_p:
        torch.testing.assert_close(out_c[level], out_p[level])
    assert grads_c.keys() == grads_p.keys() and grads_p
    for n in grads_p:
        torch.testing.assert_close(grads_c[n], grads_p[n], rtol=1e-5, atol=1e-6)
    assert saved_c < saved_p / 2  # only the segment boundaries are kept
    for (n, a), b in zip(plain.state_dict().items(), ckpt.state_dict().values()):
        torch.testing.assert_close(b, a, msg=n)  # running statistics updated once, not again by the recompute


def test_checkpointing_is_off_in_eval_and_without_grad():
    bb = backbone("resnet18", size=32, checkpointing=True).eval()
    with torch.no_grad():
        out = bb(torch.randn(1, 3, 32, 32))
    assert out["layer4"].shape == (1, 512, 1, 1)


def test_timm_backbone_uses_timms_checkpointing():
    torch.manual_seed(0)
    plain = backbone("timm", size=32, model_name="test_resnet")
    ckpt = backbone("timm", size=32, model_name="test_resnet", checkpointing=True)
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 32, 32)
    _, grads_p, saved_p = step(plain, x)
    _, grads_c, saved_c = step(ckpt, x)
    for n in grads_p:
        torch.testing.assert_close(grads_c[n], grads_p[n], rtol=1e-5, atol=1e-6)
    assert saved_c < saved_p
