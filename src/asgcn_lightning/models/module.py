"""The LightningModule: losses, metrics, the two AS-GCN training stages, optimisers and schedules.

Training runs in up to two stages inside one Trainer run. Stage ``aim`` (the first
``aim_pretrain_epochs`` epochs) trains only the A-link inference module on its own loss with its
own optimiser; stage ``main`` trains the backbone and heads on cross-entropy plus the network's
auxiliary losses. Because the two stages use different optimisers, optimisation is manual; both
optimisers and both schedules live in every checkpoint, so a resume on either side of the stage
boundary continues exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.trainer.states import TrainerFn
from torch import nn
from torch.optim import Optimizer
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from asgcn_lightning.errors import UserError
from asgcn_lightning.models.card import CARD_KEY
from asgcn_lightning.models.noise import per_sample_noise
from asgcn_lightning.schemas import AimMode

NO_LABEL = -1
"""The label of an evaluation stand-in (a process with no sample of its own): counted by no metric."""


class ActionRecognitionModule(L.LightningModule):
    """Wraps any network that follows :mod:`asgcn_lightning.models.network`.

    ``optimizer``/``scheduler`` (and ``aim.optimizer``/``aim.scheduler``) are factories from the
    Hydra config (``_partial_: true``) so the module decides which parameters each one gets.
    ``aim.pretrain_epochs`` is the length of the AIM stage; ``aim.mode`` says what happens to the
    AIM in the main stage: ``frozen`` (reference: A-links inferred with the pretrained AIM, no
    gradient), ``finetune`` (AIM parameters join the main optimiser) or ``separate`` (the AIM keeps
    training on its own loss with its own optimiser).

    Every step classifies the input window with the network's ``forward`` (``forward_train`` returns
    its logits), the pass that predict, the demo and exported models run, so the accuracies logged
    are those of the deployed model; side tasks (the prediction head) add their losses and metrics
    without changing what is classified.
    Evaluation inputs may hold several clips of a sample side by side on the person axis (``num_clips``
    of :class:`~asgcn_lightning.data.transforms.UniformSample`): each clip is classified on its own and
    the class probabilities are averaged, as in the multi-clip testing of the GCN literature.
    """

    def __init__(
        self,
        network: nn.Module,
        optimizer: Callable[..., Optimizer],
        scheduler: Callable[[Optimizer], Any] | None = None,
        aim: Mapping[str, Any] | None = None,
        class_names: Sequence[str] | None = None,
        gradient_clip_val: float | None = None,
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.network = network
        aim = dict(aim or {})  # typed: asgcn_lightning.schemas.AimConfig, checked while Hydra composes
        aim_mode = AimMode(aim.get("mode", AimMode.frozen)).value
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.aim_optimizer_factory = aim.get("optimizer")
        self.aim_scheduler_factory = aim.get("scheduler")
        self.has_aim = getattr(network, "aim", None) is not None
        self.aim_pretrain_epochs = int(aim.get("pretrain_epochs", 0)) if self.has_aim else 0
        self.aim_mode = aim_mode
        if self.has_aim:
            network.detach_alinks = aim_mode != "finetune"
        self.class_names = list(class_names) if class_names else None
        self.gradient_clip_val = gradient_clip_val
        self.compile = compile
        num_class = network.head.fc.out_features
        self.num_class = num_class
        self.train_metrics = self._accuracy(num_class, "train/")
        self.val_metrics = self._accuracy(num_class, "val/")
        self.test_metrics = self._accuracy(num_class, "test/")
        self.epoch_means = nn.ModuleDict()  # validation/test losses and terms, by name: see _log_mean
        self.val_confusion = MulticlassConfusionMatrix(num_class, ignore_index=NO_LABEL)
        self.test_confusion = MulticlassConfusionMatrix(num_class, ignore_index=NO_LABEL)
        self.save_hyperparameters(ignore=["network"], logger=False)
        self.model_card: dict[str, Any] | None = None  # set by whoever knows the data (apps.components.build_module)
        self.nonfinite_steps: torch.Tensor | None = None  # this epoch's steps with a NaN/infinite loss, on device
        self.checkpoint_epoch: int | None = None  # the epoch of the last checkpoint loaded by the Trainer
        self.example_input_shape: tuple[int, ...] | None = None  # one training sample's, known at fit setup

    @staticmethod
    def _accuracy(num_class: int, prefix: str) -> MetricCollection:
        metrics = {"acc_top1": MulticlassAccuracy(num_class, top_k=1, average="micro", ignore_index=NO_LABEL)}
        if num_class > 5:
            metrics["acc_top5"] = MulticlassAccuracy(num_class, top_k=5, average="micro", ignore_index=NO_LABEL)
        return MetricCollection(metrics, prefix=prefix)

    # -- stages ------------------------------------------------------------------------------------
    @property
    def stage(self) -> str:
        """``aim`` during the AIM epochs of a fit; a test, validation or prediction run of its own
        (``eval.py`` on a checkpoint) evaluates the trained model, whatever epoch counter it starts at."""
        fitting = self._trainer is None or self.trainer.state.fn == TrainerFn.FITTING
        return "aim" if fitting and self.current_epoch < self.aim_pretrain_epochs else "main"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)

    def setup(self, stage: str) -> None:
        train_set = getattr(getattr(self.trainer, "datamodule", None), "train_set", None)
        if stage == TrainerFn.FITTING and train_set is not None and len(train_set):
            self.example_input_shape = tuple(train_set[0][0].shape)

    @property
    def example_input_array(self) -> torch.Tensor | None:
        """One zero sample shaped like the training data, so Lightning's model summary counts each module's
        FLOPs and shapes (one forward at fit start) instead of printing zeros; in the parameters' dtype and
        device, which the precision plugin may have changed since :meth:`setup` (``64-true``, ``bf16-true``)."""
        if self.example_input_shape is None:
            return None
        parameter = next(self.network.parameters())
        return torch.zeros(1, *self.example_input_shape, dtype=parameter.dtype, device=parameter.device)

    def configure_model(self) -> None:
        # compile the entry points the stages call, not a wrapper module: state_dict keys stay unchanged
        if self.compile and not getattr(self, "_compiled", False):
            for name in ("forward", "forward_train", "aim_loss"):
                if hasattr(self.network, name):
                    setattr(self.network, name, torch.compile(getattr(self.network, name)))
            self._compiled = True

    # -- optimisation --------------------------------------------------------------------------------
    def _aim_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.network.aim.parameters() if p.requires_grad] if self.has_aim else []

    def configure_optimizers(self) -> Any:
        aim_ids = {id(p) for p in self._aim_parameters()}
        main_params = [p for p in self.network.parameters()
                       if p.requires_grad and (self.aim_mode == "finetune" or id(p) not in aim_ids)]
        optimizers = [self.optimizer_factory(main_params)]
        schedulers = [self.scheduler_factory(optimizers[0])] if self.scheduler_factory else []
        if self.has_aim and self.aim_optimizer_factory is not None:
            aim_opt = self.aim_optimizer_factory(self._aim_parameters())
            optimizers.append(aim_opt)
            if self.aim_scheduler_factory is not None:
                schedulers.append(self.aim_scheduler_factory(aim_opt))
        return optimizers, schedulers

    def _optimizers(self) -> tuple[Any, Any | None]:
        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        return optimizers[0], optimizers[1] if len(optimizers) > 1 else None

    def _step(self, optimizer: Any, loss: torch.Tensor, batch_size: int) -> None:
        # counted on the device and read once per epoch: a check per step would wait for every GPU step
        nonfinite = (~torch.isfinite(loss.detach())).long()
        self.nonfinite_steps = nonfinite if self.nonfinite_steps is None else self.nonfinite_steps + nonfinite
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss * self._share_of_global_batch(batch_size))
        if self.gradient_clip_val:
            self.clip_gradients(optimizer, gradient_clip_val=self.gradient_clip_val, gradient_clip_algorithm="norm")
        optimizer.step()

    def _share_of_global_batch(self, batch_size: int) -> float:
        """Weight of this process's mean loss that makes DDP's average gradient the global batch's mean.

        Processes may hold batches of different sizes (the last of an epoch); averaging their means
        would weigh a sample of a small batch more than one of a large batch.
        """
        if self.trainer.world_size == 1:
            return 1.0
        total = self.trainer.strategy.reduce(torch.tensor(float(batch_size), device=self.device), reduce_op="sum")
        return batch_size * self.trainer.world_size / float(total)

    # -- clips -------------------------------------------------------------------------------------
    def split_clips(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        """``(N, C, T, V, k·M)`` with ``k`` clips of the network's ``M`` persons → ``(N·k, C, T, V, M)``, ``k``.

        An input with no more persons than the network's, or not a multiple of them, is one clip.
        """
        persons, total = self.network.num_person, x.shape[-1]
        if total <= persons or total % persons:
            return x, 1
        clips = total // persons
        n, c, t, v = x.shape[:4]
        x = x.view(n, c, t, v, clips, persons).permute(0, 4, 1, 2, 3, 5)
        return x.reshape(n * clips, c, t, v, persons), clips

    @staticmethod
    def log_probabilities(logits: torch.Tensor, clips: int = 1) -> torch.Tensor:
        """Log class probabilities per sample from ``logits`` ``(N·clips, classes)``, clips averaged in probability."""
        log_p = F.log_softmax(logits, dim=-1, dtype=torch.promote_types(logits.dtype, torch.float32))
        if clips == 1:
            return log_p
        return torch.logsumexp(log_p.view(-1, clips, log_p.shape[-1]), dim=1) - math.log(clips)

    # -- steps ---------------------------------------------------------------------------------------
    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        """One step; given per-sample seeds (``(x, y, seeds)``), dropout and A-link draws follow the samples."""
        x, y, *seeds = batch
        if not seeds:
            return self._train_on(x, y)
        with per_sample_noise(seeds[0], x.device):
            return self._train_on(x, y)

    def _train_on(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.split_clips(x)[1] > 1:
            raise UserError(f"training inputs hold {x.shape[-1]} persons, the network takes "
                            f"{self.network.num_person}: num_clips > 1 is for the eval transforms only")
        main_opt, aim_opt = self._optimizers()
        if self.stage == "aim":
            if aim_opt is None:
                raise UserError("the AIM pretraining stage needs model.aim_optimizer")
            aim = self.network.aim_loss(x)
            loss = sum(aim.losses.values())
            self._step(aim_opt, loss, len(y))
            self._log_terms("train/", aim.losses, aim.metrics, len(y), loss_name="aim_loss", loss=loss)
            return loss.detach()
        if self.has_aim and self.aim_mode == "frozen" and self.network.aim.training:
            self.network.aim.eval()  # frozen means its batch norms neither use batch statistics nor update theirs
        out = self.network.forward_train(x)
        ce = F.cross_entropy(out.logits, y)
        loss = ce + sum(out.losses.values())
        self._step(main_opt, loss, len(y))
        if self.has_aim and self.aim_mode == "separate" and aim_opt is not None:
            aim = self.network.aim_loss(x)
            self._step(aim_opt, sum(aim.losses.values()), len(y))
        self.train_metrics.update(out.logits.detach(), y)
        self.log_dict(self.train_metrics, on_step=False, on_epoch=True, batch_size=len(y))
        self._log_terms("train/", {"ce": ce, **out.losses}, out.metrics, len(y), loss_name="loss", loss=loss)
        return loss.detach()

    def on_train_epoch_end(self) -> None:
        self._stop_if_diverged()
        main_sched, aim_sched = self._schedulers()
        stepped = aim_sched if self.stage == "aim" else main_sched
        if stepped is not None:
            stepped.step()
        if self.stage == "main" and self.aim_mode == "separate" and aim_sched is not None:
            aim_sched.step()
        self.log("stage", 0.0 if self.stage == "aim" else 1.0, on_epoch=True)

    def _stop_if_diverged(self) -> None:
        """End the run with an error once a loss is NaN or infinite: every later epoch would be wasted.

        Every process adds up the count of all, so all of them stop at the same epoch.
        """
        counted = self.nonfinite_steps if self.nonfinite_steps is not None else torch.zeros((), device=self.device)
        self.nonfinite_steps = None
        steps = int(self.trainer.strategy.reduce(counted.float(), reduce_op="sum"))
        if steps:
            loss = "AIM loss" if self.stage == "aim" else "loss"
            raise UserError(f"training diverged in epoch {self.current_epoch} ({self.stage} stage): the {loss} was "
                            f"NaN or infinite in {steps} steps; lower model.optimizer.lr (or the AIM's, "
                            "model.aim.optimizer.lr) or set model.gradient_clip_val")

    def _schedulers(self) -> tuple[Any | None, Any | None]:
        schedulers = self.lr_schedulers()
        if schedulers is None:
            return None, None
        schedulers = schedulers if isinstance(schedulers, list) else [schedulers]
        main = schedulers[0] if self.scheduler_factory else None
        aim = schedulers[-1] if self.aim_scheduler_factory and self.aim_optimizer_factory and self.has_aim else None
        return main, aim

    def _log_terms(self, prefix: str, losses: dict[str, torch.Tensor], metrics: dict[str, torch.Tensor],
                   batch_size: int, loss_name: str, loss: torch.Tensor) -> None:
        if prefix == "train/":  # per step, this process's own
            self.log(prefix + loss_name, loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=batch_size)
            terms = {prefix + k: v for k, v in {**losses, **metrics}.items()}
            if terms:
                self.log_dict(terms, on_step=False, on_epoch=True, batch_size=batch_size)
            return
        self._log_mean(prefix + loss_name, loss, batch_size, prog_bar=True)
        for name, value in {**losses, **metrics}.items():
            self._log_mean(prefix + name, value, batch_size)

    def _log_mean(self, name: str, value: torch.Tensor, batch_size: int, prog_bar: bool = False) -> None:
        """Log the sample-weighted mean of ``value`` over the epoch and every process, exactly.

        A torchmetrics mean sums values and weights over the processes. Lightning's ``sync_dist``
        averages the processes' sample counts as integers, which truncates them when the shards differ
        in size and skews the mean.
        """
        key = name.replace("/", "__")
        if key not in self.epoch_means:
            # summed in the precision the model computes in (float64 under trainer.precision=64-true)
            dtype = torch.promote_types(value.dtype, torch.float32)
            self.epoch_means[key] = MeanMetric().set_dtype(dtype).to(self.device)
        self.epoch_means[key].update(value.detach(), weight=batch_size)
        self.log(name, self.epoch_means[key], on_step=False, on_epoch=True, prog_bar=prog_bar,
                 metric_attribute=f"epoch_means.{key}")

    def _evaluate(self, batch: tuple[torch.Tensor, torch.Tensor], prefix: str, metrics: MetricCollection,
                  confusion: MulticlassConfusionMatrix) -> None:
        """Update the epoch's metrics; a stand-in batch (labels :data:`NO_LABEL`) runs the same steps at weight 0."""
        x, y = batch
        x, clips = self.split_clips(x)
        counted = int((y != NO_LABEL).sum())
        if self.stage == "aim":
            aim = self.network.aim_loss(x)
            self._log_terms(prefix, aim.losses, aim.metrics, counted, loss_name="aim_loss",
                            loss=sum(aim.losses.values()))
            return
        out = self.network.forward_train(x)
        log_probabilities = self.log_probabilities(out.logits, clips)
        ce = F.nll_loss(log_probabilities, y, ignore_index=NO_LABEL) if counted else log_probabilities.new_zeros(())
        metrics.update(log_probabilities, y)
        confusion.update(log_probabilities, y)
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(y))
        self._log_terms(prefix, {"ce": ce, **out.losses}, out.metrics, counted, loss_name="loss",
                        loss=ce + sum(out.losses.values()))

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val/", self.val_metrics, self.val_confusion)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test/", self.test_metrics, self.test_confusion)

    def predict_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        x = batch[0] if isinstance(batch, list | tuple) else batch
        x, clips = self.split_clips(x)
        probabilities = self.log_probabilities(self.network(x), clips).exp()
        if not (isinstance(batch, list | tuple) and len(batch) > 1):
            return {"probabilities": probabilities}
        real = batch[1] != NO_LABEL
        return {"probabilities": probabilities[real], "labels": batch[1][real]}

    # -- the model card (models/card.py): checkpoints that describe themselves ---------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.model_card is not None:
            checkpoint[CARD_KEY] = self.model_card

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # a test restores the weights but not the loop's epoch counter: reports need the weights' epoch
        self.checkpoint_epoch = checkpoint.get("epoch")

    # -- confusion matrices ----------------------------------------------------------------------------
    def on_validation_epoch_end(self) -> None:
        self.last_val_confusion = self._finish_confusion(self.val_confusion)

    def on_test_epoch_end(self) -> None:
        self.last_test_confusion = self._finish_confusion(self.test_confusion)

    @staticmethod
    def _finish_confusion(confusion: MulticlassConfusionMatrix) -> torch.Tensor | None:
        if not confusion.update_called:
            return None
        matrix = confusion.compute().cpu()  # synchronised across processes by torchmetrics
        confusion.reset()
        return matrix
