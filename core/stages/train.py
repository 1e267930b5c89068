"""The train stage: the training loop on the prepared splits, test metrics, the saved model."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..components import Kind
from ..data import Table
from .base import RunState, Stage, StageEnv

if TYPE_CHECKING:  # pragma: no cover
    from ..train import TrainJob, TrainResult


class TrainStage(Stage):
    """Trains the model (``core.train.loop.fit``), scores it on the test split, saves it."""

    kind = Kind.MODEL
    needs = ("splits", "task")
    gives = ("model", "model_component", "metrics")

    def run(self, state: RunState, env: StageEnv) -> dict[str, Any]:
        from ..train.loop import fit

        job = self.job(state, env)
        result = fit(job)
        metrics = dict(result.metrics)
        if state.splits.test is not None and state.splits.valid is not None:  # else the test split was the validation
            metrics.update(score_test(result, job, state.splits.test))
        env.folder.manifest["metrics"].update(metrics)
        state.model, state.model_component, state.metrics = result.module, job.model, metrics
        save_model(result, job, env)
        return {**result.report, "steps": result.steps, "metrics": metrics}

    def job(self, state: RunState, env: StageEnv) -> TrainJob:
        from ..train import TrainJob
        from ..train.checkpoint import resolve_resume

        plan, model = env.plan, self.build()
        return TrainJob(config=plan.pipeline.train, model=model, precision=plan.precision.build(),
                        parallel=plan.parallel.build(), train=state.splits.train, valid=state.splits.validation,
                        task=state.task, classes=state.classes, run=env.run, dist=env.dist,
                        seed=plan.pipeline.seed, log=env.record, hooks=env.hooks,
                        checkpoint_dir=env.run.dir / "checkpoints",
                        resume_from=resolve_resume(env.resume) if env.resume is not None else None,
                        batch_augmenters=state.batch_augmenters, stage=model.context)


def score_test(result: TrainResult, job: TrainJob, test: Table) -> dict[str, float]:
    from ..train.evaluate import metrics_from_outputs, predict
    from ..train.loop import encode_targets

    module = result.module
    device = next(module.parameters()).device
    outputs = predict(module, job.model.inputs(test), job.config.batch_size, job.precision, device)
    targets = encode_targets(test, job.task, job.classes, "test")
    return metrics_from_outputs(outputs, targets, job.task == "classification", prefix="test_")


def save_model(result: TrainResult, job: TrainJob, env: StageEnv) -> None:
    """``model/weights.pt`` (a plain state_dict), the model's fitted inputs, ``model/model.json``."""
    if not env.folder.writes:
        return
    import torch

    resolved = env.plan.model
    torch.save(result.module.state_dict(), env.folder.sub("model") / "weights.pt")
    env.folder.save_stage("model-inputs", job.model)
    env.folder.write_json("model/model.json", {"model": resolved.entry.name,
                                               "params": resolved.params.model_dump(mode="json"),
                                               "task": job.task, "classes": job.classes,
                                               "weights": "weights.pt (torch.load(weights_only=True))"})
