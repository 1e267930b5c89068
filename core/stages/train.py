"""The train stage: the training loop on the prepared splits, test metrics, the saved model."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from ..components import Kind, Model
from ..errors import InputError
from .base import RunState, Stage, StageEnv

if TYPE_CHECKING:  # pragma: no cover
    from ..train import TrainJob, TrainResult
    from ..validation import Plan


class TrainStage(Stage):
    """Trains the model (``core.train.loop.fit``), scores it on the test split, saves it."""

    kind = Kind.MODEL
    needs = ("splits", "task")
    gives = ("model", "model_component", "metrics")

    def run(self, state: RunState, env: StageEnv) -> dict[str, Any]:
        from ..train.loop import evaluate_table, fit
        from ..train.rendezvous import gather_on_main
        from ..train.shards import ParquetSplit

        job = self.job(state, env)
        result = fit(job)
        metrics = dict(result.metrics)
        splits = state.splits
        held_out = splits.test if splits.test is not None else splits.valid
        if isinstance(held_out, ParquetSplit):  # engine dask under --nproc: rank 0 scores it in memory
            held_out = held_out.to_table() if env.dist.is_main else None
        if held_out is not None and splits.test is not None and splits.valid is not None:
            metrics.update(evaluate_table(result.module, job, held_out, "test_"))  # else test was the validation
        if held_out is not None:  # the model's own domain metrics (Model.evaluate)
            extra = job.model.evaluate(result.module, held_out, env.context("evaluate"))
            metrics.update({f"test_{k}": v for k, v in (extra or {}).items()})
        env.folder.manifest["metrics"].update(metrics)
        state.model, state.model_component, state.metrics = result.module, job.model, metrics
        save_model(result, job, env)
        report = {**result.report, "steps": result.steps, "metrics": metrics}
        if "shard" in report:  # every rank's shard, gathered on rank 0
            report["shards"] = gather_on_main(env.dist, f"{self.id}/shards", report.pop("shard"))
        return report

    def job(self, state: RunState, env: StageEnv) -> TrainJob:
        return train_job(env.plan, state, env, self.build())

    def restore(self, record: Mapping[str, Any], state: RunState, env: StageEnv) -> None:
        """The trained model from ``model/weights.pt`` (``weights_only``), its input encodings
        fitted again on the training split (deterministic), the metrics from the record."""
        import torch

        from ..runfolder import inside
        from ..train.loop import Data

        job = self.job(state, env)
        module = job.model.build(Data.prepare(job).spec)
        weights = inside(env.run.dir, "model/weights.pt")
        try:
            module.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        except Exception as e:  # missing, damaged, or another model's
            raise InputError(f"{weights}: the trained model cannot be loaded ({type(e).__name__}: {e}); "
                             f"start the run afresh instead of resuming it") from None
        state.metrics = dict(record["report"]["metrics"])
        env.folder.manifest["metrics"].update(state.metrics)
        state.model, state.model_component = module, job.model


def train_job(plan: Plan, state: RunState, env: StageEnv, model: Model, final: bool = True) -> TrainJob:
    """The training job of ``plan`` on the prepared splits; ``final=False`` for the other
    training passes of a run (tuning trials, fine-tuning): no checkpoints, nothing resumed."""
    from ..train import TrainJob
    from ..train.checkpoint import latest_checkpoint

    return TrainJob(config=plan.pipeline.train, model=model, precision=plan.precision.build(),
                    parallel=plan.parallel.build(), train=state.splits.train, valid=state.splits.validation,
                    task=state.task, classes=state.classes, run=env.run, dist=env.dist,
                    seed=plan.pipeline.seed, log=env.record, hooks=env.hooks,
                    checkpoint_dir=env.run.dir / "checkpoints" if final else None,
                    resume_from=latest_checkpoint(env.resume / "checkpoints") if final and env.resume else None,
                    augmenters=state.training_augmenters, stage=model.context)


def save_model(result: TrainResult, job: TrainJob, env: StageEnv) -> None:
    """``model/weights.pt`` (a plain state_dict), the model's fitted inputs, ``model/model.json``."""
    if not env.folder.writes:
        return
    import torch

    resolved = env.plan.model
    torch.save(result.module.state_dict(), env.folder.sub("model") / "weights.pt")
    env.folder.save_stage("model-inputs", job.model, resolved.entry.distribution)
    env.folder.write_json("model/model.json", {"model": resolved.entry.name,
                                               "params": resolved.params.model_dump(mode="json"),
                                               "task": job.task, "classes": job.classes,
                                               "weights": "weights.pt (torch.load(weights_only=True))"})
