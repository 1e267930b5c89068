"""``distill``: knowledge distillation from the model as trained (teacher) into the compressed one."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field

from forgeline.core import CompressContext, Compressor, Params

from .qat import trainable

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor, alpha: float,
                      temperature: float) -> torch.Tensor:
    """alpha x KL(teacher/T || student/T) x T^2 + (1 - alpha) x cross-entropy(student, target).

    T^2 keeps the soft term's gradients on the hard term's scale (Hinton et al., 2015)."""
    import torch.nn.functional as F

    t = temperature
    soft = F.kl_div(F.log_softmax(student / t, dim=1), F.log_softmax(teacher / t, dim=1),
                    reduction="batchmean", log_target=True) * t * t
    return alpha * soft + (1 - alpha) * F.cross_entropy(student, target)


def _pair_class() -> type:
    from torch import nn

    class TeacherStudent(nn.Module):
        """In training, the student's and the frozen teacher's logits; in eval, the student's."""

        def __init__(self, student: nn.Module, teacher: nn.Module) -> None:
            super().__init__()
            self.student = student
            self.teacher = [teacher.eval().requires_grad_(False)]  # a list: not a submodule, never trained or saved

        def forward(self, x):  # noqa: ANN001, ANN201
            import torch

            out = self.student(x)
            if not self.training:
                return out
            teacher = self.teacher[0]
            with torch.no_grad():
                dev = next(teacher.parameters()).device
                if dev != x.device:
                    teacher.to(x.device)
                return out, teacher(x)

    return TeacherStudent


class Distill(Compressor):
    """Knowledge distillation: the compressed model learns the original's softened outputs."""

    name = "distill"

    class Params(Params):
        alpha: float = Field(0.7, ge=0, le=1, description="weight of the teacher's soft targets "
                             "(1 - alpha: the true labels)")
        temperature: float = Field(4.0, gt=0, description="softmax temperature T of both models")
        epochs: int = Field(2, ge=1, description="distillation epochs")

    def compress(self, model: nn.Module, ctx: CompressContext) -> nn.Module:
        if ctx.teacher is None:
            raise RuntimeError("distill: no teacher model (the compress stage gives the model as trained)")
        if ctx.spec.task != "classification":
            raise RuntimeError("distill: needs a classification model (soft class targets)")
        student, finish = trainable(model)  # an INT8 model continues from its fake-quantised form
        pair = _pair_class()(student, ctx.teacher)
        a, t = self.params.alpha, self.params.temperature

        def loss(outputs: Any, target: torch.Tensor) -> torch.Tensor:
            s, teacher = outputs
            return distillation_loss(s, teacher, target, a, t)

        pair = ctx.fit(pair, self.params.epochs, loss=loss)
        return finish(pair.student)

    def report(self) -> dict[str, Any]:
        return {"alpha": self.params.alpha, "temperature": self.params.temperature}
