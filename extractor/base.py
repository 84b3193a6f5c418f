"""The interface of every extractor family (``fit``, ``predict``, ``apredict``, ``save_pretrained``,
``from_pretrained``), and the family registry that :func:`load_extractor` looks a checkpoint's family up in.

A family implements the hooks (build the network, encode posts, the loss of a batch, predict, write and
read its files) and registers itself with :func:`register_family`; fitting runs :mod:`.training`'s loop
over the hooks, and checkpoints are written and read in :mod:`.checkpoint`'s format, with the model card
of :mod:`.model_card`. The registry lives here, not in :mod:`.checkpoint`, because it holds
:class:`Extractor` classes and :class:`Extractor` uses the checkpoint format: one direction of imports,
no cycle.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Self, TypeVar

from ..records import Post, Quintuple
from .checkpoint import CheckpointCard, CheckpointError, TrainingData, read_card, write_card
from .hub import resolve_model_dir
from .inputs import InputAssembler
from .model_card import write_model_card
from .training import FitReport, Scorer, TrainConfig, seed_everything, train_with_early_stopping, training_process

__all__ = ["PREDICT_BATCH_SIZE", "Extractor", "load_extractor", "register_family"]

PREDICT_BATCH_SIZE = 32
"""Posts per batch at prediction by default. On 2 cores, batches of 32 predicted about 5 % faster than 64 (x0.92
to x1.14 over six runs, the machine is noisy) and 25 % faster than 128: less padding, and the activations stay
in cache (README, "Quality, eleventh push")."""


class Extractor(ABC):
    """The interface of both model families: ``fit``, ``predict``, ``apredict``, ``save_pretrained``,
    ``from_pretrained`` (``save`` and ``load`` are the same two)."""

    family: ClassVar[str]
    inference_only: bool = False
    """True for a copy made only to predict (e.g. :meth:`SpanPairExtractor.quantized`)."""
    assembler: InputAssembler
    train_config: TrainConfig | None = None

    def __init__(self) -> None:
        self.report: FitReport | None = None
        self.training_data: TrainingData | None = None

    def _check_trainable(self, action: str) -> None:
        if self.inference_only:
            raise RuntimeError(f"cannot {action} an inference-only copy (int8): {action} the float model instead")

    # -- what a family implements ------------------------------------------------------------
    @abstractmethod
    def _prepare(self, train: Sequence[Post]) -> None:
        """Build the network and label maps before the first epoch (nothing when already built)."""

    @abstractmethod
    def _examples(self, posts: Sequence[Post]) -> list[Any]:
        """Encode posts once per fit into whatever ``_loss`` takes."""

    @abstractmethod
    def _parameter_groups(self, config: TrainConfig) -> list[dict[str, Any]]: ...

    @abstractmethod
    def _loss(self, examples: Sequence[Any]) -> Any:
        """The training loss (a scalar tensor) of one batch."""

    @abstractmethod
    def predict(
        self, posts: Sequence[Post], *, batch_size: int = PREDICT_BATCH_SIZE, progress: bool = False
    ) -> list[list[Quintuple]]:
        """The quintuples of each post, in order."""

    @abstractmethod
    def _network(self) -> Any:
        """The torch module whose state is the model."""

    @abstractmethod
    def _save_files(self, directory: Path) -> dict[str, Any]:
        """Write weights and tokenizer; return the family's entries of the checkpoint card."""

    @classmethod
    @abstractmethod
    def _load_files(cls, directory: Path, card: CheckpointCard) -> Self:
        """Read the family's files; ``card.format_version`` says which layout wrote them."""

    def _base_model(self) -> str | None:
        """The Hub id of the pretrained model this one was fine-tuned from, for the model card; None
        when it came from a local folder."""
        return None

    def _max_length(self) -> int | None:
        """The most input tokens the model reads, for the model card."""
        return getattr(getattr(self, "config", None), "max_length", None)

    # -- shared --------------------------------------------------------------------------------
    def fit(
        self,
        train: Sequence[Post],
        val: Sequence[Post],
        *,
        scorer: Scorer,
        config: TrainConfig | None = None,
        checkpoint_dir: str | Path | None = None,
        progress: bool = True,
        data_files: Mapping[str, str | Path] | None = None,
        pseudo: Sequence[Post] = (),
    ) -> FitReport:
        """Train on ``train``, keep the weights with the best ``scorer`` on ``val`` (early stopping).

        The best weights are restored at the end and, with ``checkpoint_dir``, saved there each
        time the val score improves. Same seed and data give the same scores on CPU. The model card
        records the SHA-256 of the posts and of ``data_files`` (role -> file, e.g. ``{"train": path}``).

        Self-training: with ``pseudo`` (posts labelled by a teacher model, see
        :func:`kecpm.extractor.pseudo_label`), the network first trains ``config.pseudo_epochs`` epochs on
        them, keeping the last (val selects nothing there), then on ``train`` as usual, the seed set
        again so the labelled stage starts like a run without pseudo-labels.

        With ``config.text_only_epochs`` the network then trains that many epochs on ``train`` read as
        text alone (no image description, no knowledge), keeping the last, before the full input.
        After either stage the pretrained weights learn at ``config.warm_learning_rate`` when it is set.

        >>> model = SpanPairExtractor()  # doctest: +SKIP
        >>> report = model.fit(train, val, scorer=kecpm.eval.make_scorer(mode="paper"))  # doctest: +SKIP
        """
        self._check_trainable("train")
        config = config or TrainConfig()
        if not train:
            raise ValueError("fit needs at least one training post")
        if not val:
            raise ValueError("fit needs validation posts: early stopping selects on them")

        def on_best(report: FitReport) -> None:
            self.report = report
            if checkpoint_dir is not None:
                self.save(checkpoint_dir)

        self.training_data = TrainingData.of(train, val, data_files, pseudo=pseudo)
        with training_process(config):
            seed_everything(config.seed)  # before the network is built: its new layers start from the seed
            self._prepare(train)
            self.train_config = config
            pseudo_seconds = self._fit_stage(pseudo, config.pseudo_epochs, config, progress)
            text_only = (
                [post.model_copy(update={"image_descriptions": [], "knowledge": []}) for post in train]
                if config.text_only_epochs
                else []
            )
            text_seconds = self._fit_stage(text_only, config.text_only_epochs, config, progress)
            warm = (pseudo_seconds or text_seconds) and config.warm_learning_rate is not None
            selected = config.model_copy(update={"learning_rate": config.warm_learning_rate}) if warm else config
            examples = self._examples(train)
            report = train_with_early_stopping(
                self._network(),
                examples,
                loss=self._loss,
                parameter_groups=self._parameter_groups(selected),
                validate=lambda: scorer(val, self.predict(val, batch_size=config.eval_batch_size)),
                config=config,
                on_best=on_best,
                progress=progress,
                metric=getattr(scorer, "__name__", None),
            )
            report.pseudo_seconds, report.text_only_seconds = pseudo_seconds, text_seconds
            report.decoding = self._after_training(val, scorer, config)
            self.report = report
            if checkpoint_dir is not None:
                self.save(checkpoint_dir)
        return report

    def _fit_stage(self, posts: Sequence[Post], epochs: int, config: TrainConfig, progress: bool) -> float:
        """A stage before the selected one (see :meth:`fit`): ``epochs`` epochs on ``posts``, the last kept,
        val never read; then the seed is set again. Returns its seconds (0: nothing done, no posts or epochs)."""
        if not posts or not epochs:
            return 0.0
        self._prepare(posts)
        numbers = iter(range(1, epochs + 1))
        report = train_with_early_stopping(
            self._network(),
            self._examples(posts),
            loss=self._loss,
            parameter_groups=self._parameter_groups(config),
            validate=lambda: float(next(numbers)),  # each epoch "better": the last is kept, no val read
            config=config.model_copy(update={"epochs": epochs}),
            on_best=lambda report: None,
            progress=progress,
        )
        seed_everything(config.seed)
        return report.seconds

    def _after_training(self, val: Sequence[Post], scorer: Scorer, config: TrainConfig) -> dict[str, float]:
        """Decoding settings a family chooses on val once the best weights are back (none by default)."""
        return {}

    async def apredict(
        self, posts: Sequence[Post], *, batch_size: int = PREDICT_BATCH_SIZE, progress: bool = False
    ) -> list[list[Quintuple]]:
        """:meth:`predict` in a worker thread, so the event loop stays free while torch works."""
        return await asyncio.to_thread(self.predict, posts, batch_size=batch_size, progress=progress)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write the model to ``directory`` (created) in the Hugging Face layout: ``config.json`` (the
        checkpoint card), the weights and tokenizer, and a model card ``README.md``; :meth:`from_pretrained`
        reads it back.

        >>> model.save_pretrained("runs/model")  # doctest: +SKIP
        """
        self._check_trainable("save")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        card = CheckpointCard(
            family=self.family,
            template=self.assembler.template.model_dump(mode="json", exclude={"path"}),
            parts=self.assembler.parts,
            train_config=self.train_config,
            report=self.report,
            training_data=self.training_data,
            **self._save_files(directory),
        )
        write_model_card(directory, card, base_model=self._base_model(), max_length=self._max_length())
        write_card(directory, card)
        return directory

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, *, revision: str | None = None) -> Self:
        """Load a saved model: a local folder (written by :meth:`save_pretrained` or by an earlier kecpm's
        ``save``), or a Hugging Face Hub id (downloaded with ``huggingface_hub``; offline, only a cached
        one). Called on :class:`Extractor`, it loads any registered family; on a family, only that family.
        :class:`CheckpointError` says what is wrong.

        >>> model = Extractor.from_pretrained("runs/seed17/model")  # doctest: +SKIP
        >>> model = SpanPairExtractor.from_pretrained("my-org/kecpm-span-pair", revision="v1")  # doctest: +SKIP
        """
        directory = resolve_model_dir(name_or_path, revision=revision)
        card = read_card(directory)
        family = _FAMILIES.get(card.family)
        if family is None:
            raise CheckpointError(
                f"{directory}: unknown model family {card.family!r} (known: {', '.join(sorted(_FAMILIES))})"
            )
        if not issubclass(family, cls):
            raise CheckpointError(f"{directory}: a {card.family!r} model, not a {cls.family!r} one")
        model = family._load_files(directory, card)
        model.train_config = card.train_config
        model.report = card.report
        model.training_data = card.training_data
        return model

    # the names kecpm used before save_pretrained / from_pretrained: the same methods
    save = save_pretrained
    load = from_pretrained


_FAMILIES: dict[str, type[Extractor]] = {}
_Family = TypeVar("_Family", bound=type[Extractor])


def register_family(cls: _Family) -> _Family:
    """Class decorator: :func:`load_extractor` loads the checkpoints whose card names ``cls.family``
    with ``cls``."""
    _FAMILIES[cls.family] = cls
    return cls


def load_extractor(name_or_path: str | Path, *, revision: str | None = None) -> Extractor:
    """Load a saved extractor of any registered family from a folder or a Hub id
    (:meth:`Extractor.from_pretrained`).

    >>> model = load_extractor("runs/seed17/model")  # doctest: +SKIP
    >>> model.predict(posts)  # doctest: +SKIP
    """
    return Extractor.from_pretrained(name_or_path, revision=revision)
