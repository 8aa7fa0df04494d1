"""torch.optim's step convention (``step(closure=...)``) on every fastgame optimizer, and the
frameworks that call it: PyTorch Lightning's manual optimization and HF Accelerate's wrapped
optimizer drive a few GAN steps exactly as a plain loop does."""
import copy
import warnings

import pytest
import torch

import fastgame
from bench.models import gan_loss
from fastgame.optim import DYNAMICS
from tests.helpers import flat, make_case, state_equal


def _closure(opt, G, D, real, z):
    """A closure returning the zero-sum loss, or (loss_x, loss_y) for a general-sum optimizer
    (x = D minimises -loss, y = G minimises loss)."""
    def closure():
        loss = gan_loss(G, D, real, z)
        return (-loss, loss) if len(opt.loss_names) == 2 else loss
    return closure


@pytest.mark.parametrize("name", sorted(DYNAMICS))
def test_step_takes_closure_by_name(name):
    """``step(closure=f)`` is ``step(f)``; giving both a loss and closure=, or neither, or a
    closure that is not callable, is one ValueError that changes nothing."""
    cls = DYNAMICS[name]
    G, D, batches = make_case(steps=3)
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    a, b = cls(D.parameters(), G.parameters()), cls(D2.parameters(), G2.parameters())
    for real, z in batches[:2]:
        out_a = a.step(_closure(a, G, D, real, z))
        out_b = b.step(closure=_closure(b, G2, D2, real, z))
        assert torch.equal(flat(D, G), flat(D2, G2))
        assert torch.equal(torch.stack(out_a) if isinstance(out_a, tuple) else out_a,
                           torch.stack(out_b) if isinstance(out_b, tuple) else out_b)
    sd, params = b.state_dict(), flat(D2, G2)
    real, z = batches[2]
    losses = _closure(b, G2, D2, real, z)()
    losses = losses if isinstance(losses, tuple) else (losses,)
    with pytest.raises(ValueError, match="or closure=, not both"):
        b.step(*losses, closure=_closure(b, G2, D2, real, z))
    with pytest.raises(ValueError, match="needs .*or a closure"):
        b.step()
    with pytest.raises(ValueError, match="closure must be a callable"):
        b.step(closure=losses[0])
    assert state_equal(b.state_dict(), sd) and torch.equal(flat(D2, G2), params)


def test_cgds_keywords_still_work():
    """CGDs' own keywords: ``step(loss=...)`` (ACGD/BCGD) and ``step(loss_x, loss_y, trigger)`` (GACGD)."""
    G, D, batches = make_case(steps=2)
    fastgame.BCGD(D.parameters(), G.parameters()).step(loss=gan_loss(G, D, *batches[0]))
    loss = gan_loss(G, D, *batches[1])
    fastgame.GACGD(D.parameters(), G.parameters()).step(-loss, loss, 0)


def _plain_run(G, D, batches, closure_steps):
    """The reference: fastgame's ACGD stepped by hand with a closure, one step per batch."""
    opt = fastgame.ACGD(D.parameters(), G.parameters(), lr_max=1e-2, lr_min=1e-2)
    for real, z in batches[:closure_steps]:
        opt.step(lambda: gan_loss(G, D, real, z))
    return opt


def test_lightning_manual_optimization_drives_acgd(tmp_path):
    """The Lightning pattern of the README: automatic_optimization off, the optimizer from
    configure_optimizers, and ``self.optimizers().step(closure=closure)`` with a closure that
    returns the loss (and does not call backward)."""
    pl = pytest.importorskip("pytorch_lightning")
    G, D, batches = make_case(steps=4)
    G_ref, D_ref = copy.deepcopy(G), copy.deepcopy(D)

    class GAN(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.G, self.D = G, D
            self.automatic_optimization = False

        def configure_optimizers(self):
            return fastgame.ACGD(self.D.parameters(), self.G.parameters(), lr_max=1e-2, lr_min=1e-2)

        def training_step(self, batch, batch_idx):
            real, z = batch
            opt = self.optimizers()

            def closure():
                return gan_loss(self.G, self.D, real, z)

            opt.step(closure=closure)
            self.log("cg_iters", float(opt.optimizer.get_info()["iter_num"]))

    loader = torch.utils.data.DataLoader([(r, z) for r, z in batches], batch_size=None, shuffle=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's advice on dataloader workers and logging
        trainer = pl.Trainer(max_steps=len(batches), accelerator="cpu", devices=1, logger=False,
                             enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                             default_root_dir=tmp_path)
        model = GAN()
        trainer.fit(model, loader)
    ref = _plain_run(G_ref, D_ref, batches, len(batches))
    assert torch.equal(flat(D, G), flat(D_ref, G_ref))
    assert trainer.optimizers[0].state["game"]["step"] == ref.state["game"]["step"] == len(batches)


def test_accelerate_prepared_optimizer_drives_acgd():
    """``accelerator.prepare`` wraps the optimizer (AcceleratedOptimizer), which calls
    ``optimizer.step(closure)``: the same steps as a plain loop."""
    accelerate = pytest.importorskip("accelerate")
    G, D, batches = make_case(steps=3)
    G_ref, D_ref = copy.deepcopy(G), copy.deepcopy(D)
    accelerator = accelerate.Accelerator(cpu=True)
    opt = fastgame.ACGD(D.parameters(), G.parameters(), lr_max=1e-2, lr_min=1e-2)
    G, D, opt = accelerator.prepare(G, D, opt)
    assert opt is not None and not isinstance(opt, fastgame.ACGD)  # wrapped
    for i, (real, z) in enumerate(batches):
        def closure():
            return gan_loss(G, D, real, z)
        opt.step(closure=closure) if i % 2 else opt.step(closure)
    _plain_run(G_ref, D_ref, batches, len(batches))
    assert torch.equal(flat(D, G), flat(D_ref, G_ref))
