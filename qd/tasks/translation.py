"""The translation task adapter: fairseq LSTMs on prepared parallel text, perplexity and BLEU.

* data: ``prepare`` tokenises and binarises a corpus (:mod:`qd.text.prepare`); batches hold fairseq's
  padded token tensors (``src_tokens`` left-padded with ``</s>`` at the end, ``prev_output_tokens`` =
  ``</s>`` then the target, ``target`` = the target then ``</s>``), their sentence ``id`` and the split.
  A training epoch is fairseq's order: a seeded permutation, stably sorted by target then source
  length (so a batch holds sentences of similar length and little padding), cut into batches of
  ``batch_size`` sentences, the batches shuffled;
* model: :func:`qd.models.seq2seq.build_seq2seq`; ``forward(src_tokens, src_lengths,
  prev_output_tokens) -> (logits, attention)``;
* losses: the NLL of the target tokens (padding ignored), reduced as ``train.loss_reduction`` says
  (``token_mean``, the default, or ``sentence_sum``, the official code's: :meth:`Translation.loss`), and
  the word-level distillation loss of the official NMT code, with options
  (:meth:`Translation.distillation_loss`); the teacher's
  distribution can be cached as its top-k per training token (``distill.cache_topk``);
* evaluation: teacher-forced perplexity every epoch; at the end beam search (fairseq's
  ``SequenceGenerator``, beam 5, ``<unk>`` replaced by the source word of highest attention),
  sacreBLEU on detokenised output against the raw references (``bleu``), the legacy BLEU of the official
  code (``bleu_legacy``: ``multi-bleu.perl -lc`` on tokenised text, :func:`legacy_bleu`) and the token
  agreement with the teacher;
* use: :meth:`Translation.translate_sentences` takes raw sentences through the same tokenisation,
  vocabulary, beam search and detokenisation (``qd translate``, :mod:`qd.use`).

Exercise it with ``pytest tests/test_translation.py``.
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from qd.errors import DataMissing
from qd.tasks import TASKS
from qd.tasks.base import Task, prepared_file
from qd.text import import_fairseq
from qd.text.prepare import LAYOUT, PreparedText, prepare_translation
from qd.text.tokenise import detokenise, split_pretokenised, tokenise

REDUCTIONS = ("sentence_sum", "token_mean")
# The largest logits tensor (floats) an evaluation batch may produce: batches are cut to
# LOGITS_BUDGET // target vocabulary target positions (256 MB of fp32).
LOGITS_BUDGET = 1 << 26
HYPOTHESES = TASKS["translation"].outputs  # one home: the task description


@dataclass
class TopK:
    """A teacher distribution kept as its ``k`` largest logits per target position."""

    logits: torch.Tensor  # (B, T, k)
    indices: torch.Tensor  # (B, T, k) vocabulary indices


class TopKCache:
    """The teacher's top-k logits of every training target token, filled once per run.

    The teacher runs in eval mode and teacher-forced, so its output at a real (non-padding) target
    position does not depend on the epoch or on the batch: it is computed once, over the whole
    training set, when the first distillation batch asks for it, and read back afterwards. Padding positions are not cached (their outputs depend on the
    batch's padding), which is why the cache requires ``distill.mask_padding``.
    """

    def __init__(self, target_lengths: torch.Tensor, k: int, device: torch.device):
        self.k = k
        self.teacher: nn.Module | None = None
        self.lengths = target_lengths.to(device)
        self.offsets = (torch.cumsum(target_lengths, 0) - target_lengths).to(device)
        total = int(target_lengths.sum())
        self.logits = torch.empty(total, k, device=device)
        self.indices = torch.empty(total, k, dtype=torch.int32, device=device)
        self.filled = torch.zeros(len(target_lengths), dtype=torch.bool, device=device)

    def _positions(self, ids: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        steps = torch.arange(width, device=ids.device)
        return self.offsets[ids][:, None] + steps, steps < self.lengths[ids][:, None]

    def store(self, ids: torch.Tensor, logits: torch.Tensor) -> None:
        values, indices = logits.topk(self.k, dim=-1)
        pos, valid = self._positions(ids, logits.shape[1])
        self.logits[pos[valid]] = values[valid].float()
        self.indices[pos[valid]] = indices[valid].int()
        self.filled[ids] = True

    def lookup(self, ids: torch.Tensor, width: int) -> TopK:
        pos, valid = self._positions(ids, width)
        logits = torch.zeros(len(ids), width, self.k, device=self.logits.device)
        indices = torch.zeros(len(ids), width, self.k, dtype=torch.long, device=self.logits.device)
        logits[valid] = self.logits[pos[valid]]
        indices[valid] = self.indices[pos[valid]].long()
        return TopK(logits, indices)


def token_agreement(hypotheses: list[str], teacher: list[str], lang: str) -> float:
    """Position-wise agreement with the teacher's translations, in percent (the official code's
    "percentage word similarity"): per sentence the share of positions holding the same token
    (case-insensitive) out of the longer of the two, averaged over sentences. Both sides are
    Moses-tokenised first, so detokenised files compare as the official tokenised ones did."""
    if len(hypotheses) != len(teacher):
        raise ValueError(f"token agreement: {len(hypotheses)} hypotheses but the teacher has {len(teacher)}")
    total = 0.0
    for h, t in zip(hypotheses, teacher):
        a, b = tokenise(h, lang, lowercase=True), tokenise(t, lang, lowercase=True)
        n = max(len(a), len(b))
        total += 1.0 if n == 0 else sum(x == y for x, y in zip(a, b)) / n
    return 100.0 * total / max(len(hypotheses), 1)


def legacy_bleu(hypotheses: list[str], references: list[str]) -> tuple[float, str]:
    """The official code's ``multi-bleu.perl -lc`` (lowercased, on the Moses-tokenised text as it is, no
    smoothing: multi-bleu.perl has none) and its sacreBLEU signature. The text is tokenised on purpose,
    so sacreBLEU's "It looks like you forgot to detokenize your test data" check (which fires on 100
    hypotheses ending in " .") is switched off here (``force``), and only here: the reported ``bleu``
    runs on detokenised text and keeps it."""
    from sacrebleu.metrics import BLEU

    legacy = BLEU(tokenize="none", lowercase=True, smooth_method="none", force=True)
    return legacy.corpus_score(hypotheses, [references]).score, str(legacy.get_signature())


def collate_pairs(samples: list[dict], pad: int, eos: int, device: torch.device) -> dict:
    """fairseq's padded batch of ``{"id", "source"[, "target"]}`` samples, on ``device``: the sources
    left-padded, sorted longest first; without targets (raw sentences to translate) the batch holds
    no ``target`` or ``prev_output_tokens``."""
    from fairseq.data.language_pair_dataset import collate

    s = collate(samples, pad_idx=pad, eos_idx=eos, left_pad_source=True, left_pad_target=False, input_feeding=True)
    net = s["net_input"]
    batch = {"id": s["id"].to(device), "src_tokens": net["src_tokens"].to(device),
             "src_lengths": net["src_lengths"].to(device), "ntokens": s["ntokens"], "nsentences": s["nsentences"]}
    if s["target"] is not None:
        batch.update(prev_output_tokens=net["prev_output_tokens"].to(device), target=s["target"].to(device))
    return batch


def beam_batch_size(evaluation: dict, target_vocab: int) -> int:
    """Sentences per beam-search batch: the ``evaluation.batch_size`` (512) whose beams' logits fit
    :data:`LOGITS_BUDGET`."""
    beam = evaluation.get("beam", 5)
    return max(1, min(evaluation.get("batch_size", 512), LOGITS_BUDGET // (beam * target_vocab)))


def beam_search(model: nn.Module, tgt_dict, batches, source_words: list[list[str]],
                evaluation: dict) -> list[list[str] | None]:
    """fairseq's ``SequenceGenerator`` over ``batches`` (from :func:`collate_pairs`) with the run's
    ``evaluation`` block (``beam`` 5, ``decode_max_length`` 100, ``replace_unk`` by default): the best
    hypothesis of every sentence as words, at its ``id``; ``source_words[id]`` are the words an
    ``<unk>`` may be replaced by. Ids no batch holds stay ``None``."""
    from fairseq.sequence_generator import SequenceGenerator

    beam, max_len = evaluation.get("beam", 5), evaluation.get("decode_max_length", 100)
    replace_unk = evaluation.get("replace_unk", True)
    model.eval()
    generator = SequenceGenerator([model], tgt_dict, beam_size=beam, max_len_a=0, max_len_b=max_len)
    out: list[list[str] | None] = [None] * len(source_words)
    with torch.no_grad():
        for batch in batches:
            sample = {"net_input": {"src_tokens": batch["src_tokens"], "src_lengths": batch["src_lengths"]}}
            hypos = generator.generate([model], sample)
            for row, sid in enumerate(batch["id"].tolist()):
                out[sid] = hypothesis_words(hypos[row][0], source_words[sid], tgt_dict, replace_unk)
    return out


def hypothesis_words(hypo: dict, source: list[str], tgt_dict, replace_unk: bool) -> list[str]:
    """Hypothesis tokens as words; ``<unk>`` replaced by the source word it attends to most."""
    eos = tgt_dict.eos()
    ids = hypo["tokens"].tolist()
    if ids and ids[-1] == eos:
        ids = ids[:-1]
    words = [tgt_dict[i] for i in ids]
    # (source positions, target positions); the encoder moved the left padding to the right, so
    # row p is the sentence's p-th source token, then its </s>, then padding
    attention = hypo["attention"]
    if replace_unk and source and attention.numel():
        unk = tgt_dict.unk()
        for t, i in enumerate(ids):
            if i == unk:  # only real source words are candidates, not </s> or padding
                words[t] = source[int(attention[:len(source), t].argmax())]
    return words


@dataclass
class Vocabularies:
    """What translating raw text takes from a prepared folder (:mod:`qd.text.prepare`): the languages,
    the tokenisation (Moses, or spaces for a corpus that came tokenised; lowercased or not) and both
    dictionaries, checked against the model's meta so a model never reads another corpus's indices."""

    source_lang: str
    target_lang: str
    lowercase: bool
    pretokenised: bool
    src_dict: object
    tgt_dict: object

    @classmethod
    def read(cls, folder: Path, model_meta: dict) -> "Vocabularies":
        import_fairseq()
        from fairseq.data import Dictionary

        path = prepared_file(folder, LAYOUT, "languages, lowercasing and tokenisation of the corpus")
        layout = json.loads(path.read_text())
        if "pretokenised" not in layout:
            raise DataMissing(f"{path} has no 'pretokenised' key (how new text is tokenised): the folder was "
                              "prepared by an earlier version; delete it and prepare it again ('qd data' or the "
                              "workflow's data rule)")
        src, tgt = layout["source_lang"], layout["target_lang"]
        if (src, tgt) != (model_meta["source_lang"], model_meta["target_lang"]):
            raise DataMissing(f"{Path(folder) / LAYOUT} is {src}-{tgt} data but the model translates "
                              f"{model_meta['source_lang']}-{model_meta['target_lang']}: give its own data with --data")
        dicts = {}
        for side, lang in (("src", src), ("tgt", tgt)):
            path = prepared_file(folder, f"dict.{lang}.txt", f"{lang} vocabulary")
            dicts[side] = Dictionary.load(str(path))
            if len(dicts[side]) != model_meta[f"{side}_vocab"]:
                raise DataMissing(f"{path} holds {len(dicts[side])} symbols but the model was trained on "
                                  f"{model_meta[f'{side}_vocab']}: {folder} is not the data the model was trained "
                                  "on; give its own data with --data")
        return cls(src, tgt, layout["lowercase"], layout["pretokenised"], dicts["src"], dicts["tgt"])

    def source_words(self, line: str) -> list[str]:
        """The tokens of a raw source line, as :func:`qd.text.prepare.prepare_translation` made them."""
        if self.pretokenised:
            return split_pretokenised(line, self.lowercase)
        return tokenise(line.strip(), self.source_lang, self.lowercase)

    def encode(self, words: list[str]) -> torch.Tensor:
        """Source indices ending with ``</s>``, as :func:`qd.text.prepare.binarise` stores them."""
        d = self.src_dict
        return torch.tensor([d.index(w) for w in words] + [d.eos()], dtype=torch.long)


class Translation(Task):
    """Seq2seq translation on a prepared folder (``qd.text.prepare``)."""

    info = TASKS["translation"]

    def __init__(self, spec: dict, folder: Path, device: torch.device):
        super().__init__(spec, folder, device)
        self.data = PreparedText.read(folder)
        self.src_dict, self.tgt_dict = self.data.src_dict, self.data.tgt_dict
        layout = self.data.layout
        self.source_lang, self.target_lang = layout["source_lang"], layout["target_lang"]
        self.pad, self.eos = self.tgt_dict.pad(), self.tgt_dict.eos()
        self.meta = dict(layout)
        self._lengths = {split: (torch.tensor([len(s) for s in src]), torch.tensor([len(t) for t in tgt]))
                         for split, (src, tgt) in self.data.tokens.items()}
        # the teacher's test translations (one detokenised line per test pair), set by the run when it
        # has a teacher: final_metrics then reports the token agreement with them
        self.teacher_hypotheses: list[str] | None = None
        self._cache: TopKCache | None = None
        if "distill" in spec:
            self._check_distill(spec["distill"])

    # ------------------------------------------------------------------ data
    @classmethod
    def prepare(cls, dataset: dict, folder: Path) -> dict:
        return prepare_translation(dataset, folder)

    def _collate(self, split: str, ids) -> dict:
        src, tgt = self.data.tokens[split]
        samples = [{"id": int(i), "source": src[i], "target": tgt[i]} for i in ids]
        return {"split": split, **collate_pairs(samples, self.pad, self.eos, self.device)}

    def _length_order(self, split: str, order: torch.Tensor) -> torch.Tensor:
        """``order`` stably sorted by target length, then by source length (fairseq's ordered_indices)."""
        src_len, tgt_len = self._lengths[split]
        order = order[torch.sort(tgt_len[order], stable=True).indices]
        return order[torch.sort(src_len[order], stable=True).indices]

    def train_batches(self, batch_size: int, generator: torch.Generator) -> Iterator[dict]:
        n = len(self._lengths["train"][0])
        order = self._length_order("train", torch.randperm(n, generator=generator))
        chunks = order.split(batch_size)
        for j in torch.randperm(len(chunks), generator=generator).tolist():
            yield self._collate("train", chunks[j].tolist())

    def n_train_batches(self, batch_size: int) -> int:
        return math.ceil(len(self._lengths["train"][0]) / batch_size)

    def _budget_chunks(self, split: str, max_sentences: int, positions: int) -> list[list[int]]:
        """Length-sorted chunks of at most ``max_sentences`` whose padded targets fit ``positions``."""
        n = len(self._lengths[split][0])
        order = self._length_order(split, torch.arange(n)).tolist()
        tgt_len = self._lengths[split][1].tolist()
        chunks, current, longest = [], [], 0
        for i in order:
            if current and (len(current) >= max_sentences or (len(current) + 1) * max(longest, tgt_len[i]) > positions):
                chunks.append(current)
                current, longest = [], 0
            current.append(i)
            longest = max(longest, tgt_len[i])
        if current:
            chunks.append(current)
        return chunks

    def eval_batches(self, split: str, batch_size: int) -> Iterator[dict]:
        for ids in self._budget_chunks(split, batch_size, max(1, LOGITS_BUDGET // len(self.tgt_dict))):
            yield self._collate(split, ids)

    # ------------------------------------------------------------------ models
    @classmethod
    def build_model(cls, model_spec: dict, model_meta: dict) -> nn.Module:
        from qd.models.seq2seq import build_seq2seq

        return build_seq2seq(model_spec, model_meta)

    def model_meta(self) -> dict:
        d = self.tgt_dict
        return {"src_vocab": len(self.src_dict), "tgt_vocab": len(d), "pad": d.pad(), "eos": d.eos(), "bos": d.bos(),
                "unk": d.unk(), "source_lang": self.source_lang, "target_lang": self.target_lang}

    def inputs(self, batch: dict) -> tuple:
        return batch["src_tokens"], batch["src_lengths"], batch["prev_output_tokens"]

    # ------------------------------------------------------------------ losses
    def loss(self, output, batch: dict) -> torch.Tensor:
        """The NLL of the target tokens (padding ignored), as the run's ``train.loss_reduction`` says:
        ``token_mean`` (the default) divides by the target tokens; ``sentence_sum``, the official code's
        (``onmt/Loss.py``: ``NLLLoss(size_average=False)``, the sum over the batch's tokens, then divided
        by its sentences), by the sentences, the scale of :meth:`distillation_loss`'s ``sentence_sum``."""
        logits, target = output[0], batch["target"]
        reduction = self.spec.get("train", {}).get("loss_reduction", "token_mean")
        if reduction not in REDUCTIONS:
            raise ValueError(f"train.loss_reduction for translation must be one of {REDUCTIONS}, got {reduction!r}")
        flat = logits.reshape(-1, logits.shape[-1]), target.reshape(-1)
        if reduction == "token_mean":
            return F.cross_entropy(*flat, ignore_index=self.pad)
        return F.cross_entropy(*flat, ignore_index=self.pad, reduction="sum") / target.shape[0]

    @staticmethod
    def cached_topk(distill: dict) -> int:
        """``k`` when the run caches the teacher's top-k (``cache_topk: k``, with ``cache_teacher`` true
        or absent), else 0 (the teacher runs every step)."""
        k = distill.get("cache_topk", 0)
        return k if k and distill.get("cache_teacher", True) else 0

    @classmethod
    def _check_distill(cls, distill: dict) -> None:
        reduction = distill.get("reduction", "sentence_sum")
        if reduction not in REDUCTIONS:
            raise ValueError(f"distill.reduction for translation must be one of {REDUCTIONS}, got {reduction!r}")
        if distill.get("cache_teacher") and not distill.get("cache_topk", 0):
            raise ValueError("distill.cache_teacher for translation keeps the teacher's top-k per target token: set "
                             "distill.cache_topk (e.g. 8); the full distribution of every token would not fit")
        if cls.cached_topk(distill) and not distill.get("mask_padding", False):
            raise ValueError("distill.cache_topk > 0 needs distill.mask_padding: true (the teacher's outputs at "
                             "padding positions depend on the batch, so they cannot be cached)")

    def teacher_output(self, teacher: nn.Module, batch: dict):
        """The teacher's logits on ``batch`` (teacher-forced, eval mode, no gradient), or, with
        ``distill.cache_topk = k``, its top-k logits per target token from the run's cache."""
        if teacher.training:
            teacher.eval()
        k = self.cached_topk(self.spec.get("distill", {}))
        if not k or batch["split"] != "train":
            with torch.no_grad():
                return teacher(*self.inputs(batch))[0]
        if self._cache is None or self._cache.teacher is not teacher or self._cache.k != k:
            # one cache per teacher: an adapter reused for another run never reads a stale one
            self._cache = self._fill_cache(teacher, k)
        return self._cache.lookup(batch["id"], batch["target"].shape[1])

    def _fill_cache(self, teacher: nn.Module, k: int) -> TopKCache:
        """The teacher over the whole training set once, in large length-sorted batches (the
        recurrent steps of a batch cost the same Python overhead for 64 sentences or 512)."""
        cache = TopKCache(self._lengths["train"][1], k, self.device)
        cache.teacher = teacher
        with torch.no_grad():
            for ids in self._budget_chunks("train", 512, max(1, LOGITS_BUDGET // len(self.tgt_dict))):
                batch = self._collate("train", ids)
                cache.store(batch["id"], teacher(*self.inputs(batch))[0])
        return cache

    def distillation_loss(self, output, teacher_output, batch: dict, distill: dict) -> torch.Tensor:
        """``(1 - w) NLL + w T^2 KL(p_teacher^T || p_student^T)`` per target position, with

        * ``reduction``: ``sentence_sum`` (the official code: both terms summed over positions, the KL
          also over the vocabulary, divided by the number of sentences) or ``token_mean`` (divided by
          the number of positions counted);
        * ``mask_padding``: KL only at real target positions (the official code also counted the
          padding positions; the NLL never does);
        * ``T^2``: Hinton's factor, so the soft term's gradient does not shrink with T. The official
          NMT code had none, and ran at T = 1 where the two agree;
        * a :class:`TopK` teacher output: the teacher's top-k renormalised at T (a distribution over
          k words), against the student's full log-softmax at T read at those k words.
        """
        self._check_distill(distill)
        temperature, weight = distill["temperature"], distill["weight"]
        reduction = distill.get("reduction", "sentence_sum")
        logits = output[0]
        target = batch["target"]
        real = target.ne(self.pad)
        student = F.log_softmax(logits.float() / temperature, dim=-1)
        # at T = 1 (the official setting) the soft term's log-softmax serves the NLL too: one pass over
        # the vocabulary fewer, forward and backward
        log_probs = student if temperature == 1 else F.log_softmax(logits.float(), dim=-1)
        nll = -log_probs.gather(-1, target.unsqueeze(-1)).squeeze(-1)[real].sum()
        if isinstance(teacher_output, TopK):
            teacher = F.log_softmax(teacher_output.logits / temperature, dim=-1)
            student = student.gather(-1, teacher_output.indices)
        else:
            teacher = F.log_softmax(teacher_output.detach().float() / temperature, dim=-1)
        kl = (teacher.exp() * (teacher - student)).sum(-1)  # (B, T): KL at each target position
        counted = real if distill.get("mask_padding", False) else torch.ones_like(real)
        kl = kl[counted].sum()
        if reduction == "sentence_sum":
            hard, soft = nll / target.shape[0], kl / target.shape[0]
        else:
            hard, soft = nll / real.sum(), kl / counted.sum()
        return (1 - weight) * hard + weight * temperature**2 * soft

    # ------------------------------------------------------------------ evaluation
    def _eval_batch_size(self) -> int:
        return self.spec.get("evaluation", {}).get("batch_size", 512)

    def epoch_metrics(self, forward, split: str) -> dict[str, float]:
        """Teacher-forced loss (NLL per target token) and perplexity of ``forward`` on ``split``."""
        nll, tokens = 0.0, 0
        with torch.no_grad():
            for batch in self.eval_batches(split, self._eval_batch_size()):
                logits = forward(*self.inputs(batch))[0]
                nll += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch["target"].reshape(-1),
                                             ignore_index=self.pad, reduction="sum"))
                tokens += batch["ntokens"]
        loss = nll / tokens
        return {"loss": loss, "ppl": math.exp(min(loss, 700.0))}

    def translate(self, model: nn.Module, split: str = "test") -> list[list[str]]:
        """Beam-search translations of ``split`` as token lists, in the split's order."""
        evaluation = self.spec.get("evaluation", {})
        source_words = [line.split() for line in self.data.text(split, self.source_lang)]
        per_batch = beam_batch_size(evaluation, len(self.tgt_dict))
        batches = (self._collate(split, ids) for ids in self._budget_chunks(split, per_batch, 1 << 62))
        return beam_search(model, self.tgt_dict, batches, source_words, evaluation)

    def _words(self, hypo: dict, source: list[str], replace_unk: bool) -> list[str]:
        return hypothesis_words(hypo, source, self.tgt_dict, replace_unk)

    def final_metrics(self, model: nn.Module) -> tuple[dict, dict[str, str]]:
        from sacrebleu.metrics import BLEU

        tokens = self.translate(model, "test")
        hypotheses = [detokenise(t, self.target_lang) for t in tokens]
        raw_refs = self.data.text("test", self.target_lang, "raw")
        tok_refs = self.data.text("test", self.target_lang, "tok")
        # sacreBLEU's own tokenisation on detokenised text; case-insensitive when the data was lowercased
        # (the signature records it as case:lc)
        bleu = BLEU(lowercase=self.data.layout["lowercase"])
        score = bleu.corpus_score(hypotheses, [raw_refs])
        legacy_score, legacy_signature = legacy_bleu([" ".join(t) for t in tokens], tok_refs)
        # which score is which: each one's sacreBLEU signature (tok:13a on detokenised text for bleu,
        # tok:none on the tokenised text for bleu_legacy)
        row = {"bleu": score.score, "bleu_legacy": legacy_score,
               "ppl": self.epoch_metrics(model, "test")["ppl"], "val_ppl": self.epoch_metrics(model, "val")["ppl"],
               "token_agreement": (token_agreement(hypotheses, self.teacher_hypotheses, self.target_lang)
                                   if self.teacher_hypotheses is not None else None),
               "sacrebleu_signature": str(bleu.get_signature()), "bleu_legacy_signature": legacy_signature,
               "n_test": len(hypotheses)}
        return row, {HYPOTHESES: "".join(h + "\n" for h in hypotheses)}

    def use_teacher_run(self, folder: Path) -> None:
        self.load_teacher_hypotheses(folder)

    def load_teacher_hypotheses(self, teacher_dir: str | Path) -> None:
        """Read the teacher run's ``test_hypotheses.txt`` for the token agreement."""
        path = Path(teacher_dir) / HYPOTHESES
        lines = path.read_text(encoding="utf-8").splitlines()
        n = len(self._lengths["test"][0])
        if len(lines) != n:
            raise ValueError(f"{path} has {len(lines)} lines but the test set has {n} pairs")
        self.teacher_hypotheses = lines

    # ------------------------------------------------------------------ use
    @classmethod
    def translate_sentences(cls, model: nn.Module, model_meta: dict, folder: Path, evaluation: dict,
                            sentences: list[str]) -> tuple[list[str], dict[int, str]]:
        """Raw source ``sentences`` through the evaluation's pipeline: the prepared folder's tokenisation
        and vocabulary, :func:`beam_search` with ``evaluation``, detokenisation. A sentence with no token or
        more than the encoder reads is refused: its translation is empty and its index maps to why."""
        vocab = Vocabularies.read(folder, model_meta)
        words = [vocab.source_words(s) for s in sentences]
        limit = model.max_positions()[0] - 1  # fairseq's limit counts the source's </s>
        refused = {i: "empty: nothing to translate" for i, w in enumerate(words) if not w}
        refused |= {i: f"too long: {len(w)} tokens, the model reads at most {limit}"
                    for i, w in enumerate(words) if len(w) > limit}
        # sentences of similar length share a batch (little padding), as in evaluation
        ids = sorted((i for i in range(len(words)) if i not in refused), key=lambda i: len(words[i]))
        per_batch = beam_batch_size(evaluation, len(vocab.tgt_dict))
        pad, eos = vocab.tgt_dict.pad(), vocab.tgt_dict.eos()
        device = next(model.parameters()).device
        batches = (collate_pairs([{"id": i, "source": vocab.encode(words[i])} for i in ids[k:k + per_batch]],
                                 pad, eos, device) for k in range(0, len(ids), per_batch))
        hypotheses = beam_search(model, vocab.tgt_dict, batches, words, evaluation)
        return [detokenise(h, vocab.target_lang) if h is not None else "" for h in hypotheses], refused

    def example_input(self, batch_size: int) -> tuple:
        n = len(self._lengths["test"][0])
        return self.inputs(self._collate("test", [i % n for i in range(batch_size)]))
