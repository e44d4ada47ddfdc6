"""The one pipeline assembler: a profile + a KB directory -> a loaded RAGPipeline.

``ask``, ``search``, ``eval`` (retrieval-only included), the demo and the
Python API all call :func:`build_pipeline`, so every profile setting is
applied the same way everywhere:

- the retriever spec: an explicit ``--retriever`` wins; a profile spec that
  names a kind but no weights (``ret2:``) takes the checkpoint recorded in the
  KB's embeddings manifest; no profile at all (``search``) uses the recorded
  retriever as is;
- the query instruction (``Profile.instruction``; None = the retriever's own);
- the device and dtype (``auto``: cuda + bfloat16 when torch sees a GPU);
- ``uses_image`` (a text-only profile never hands the photo to a model).

Order matters for the user: everything that needs no model (profile, KB
complete, embedded, indexed, generator server reachable) is checked first, so
a mistake fails in a second, not after the models load.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from ragvqa.config import PROFILES, GeneratorConfig, Profile, get_profile
from ragvqa.errors import InputError, KnowledgeBaseError
from ragvqa.kb.layout import KBDir, as_kb_dir
from ragvqa.limits import check_k
from ragvqa.pipeline.rag import RAGPipeline
from ragvqa.retriever.precision import resolve_dtype

log = logging.getLogger(__name__)

Progress = Callable[[str], None]

#: The profile used when a caller names none (``ragvqa search``): the KB's own
#: retriever with its default instruction, nothing else.
KB_DEFAULT = Profile(
    name="kb-default",
    retriever="",
    generator=GeneratorConfig(),
    instruction=None,
    description="the retriever recorded in the KB's embeddings manifest",
)


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; other values unchanged."""
    if device != "auto":
        return device
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a core dependency
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_retriever_spec(kb_dir: str | Path | KBDir, profile_spec: str, explicit: str | None) -> str:
    """The ``KIND:ARG`` spec to load for a KB (see the module docstring for the rules).

    Raises:
        InputError: a malformed spec.
        KnowledgeBaseError: no spec can be told (none given, none recorded).
    """
    from ragvqa.retriever.registry import parse_spec

    if explicit:
        parse_spec(explicit)
        return explicit
    kind, _, arg = profile_spec.partition(":")
    kb = as_kb_dir(kb_dir)
    recorded = kb.recorded_retriever_spec()
    if arg:
        parse_spec(profile_spec)
        if recorded and recorded.partition(":")[0] != kind:
            # Another kind of retriever, caught before any model loads; the
            # fingerprint check after loading catches the same kind with other weights.
            raise KnowledgeBaseError(
                f"{kb.root} was embedded with {recorded}, but the profile uses {profile_spec}",
                hint=_mismatch_hint(kb, recorded, profile_spec),
            )
        return profile_spec
    if recorded and (not kind or recorded.partition(":")[0] == kind):
        return recorded
    if not recorded:
        raise KnowledgeBaseError(
            f"the embeddings manifest of {kb.root} does not say which retriever made it",
            hint="pass --retriever KIND:ARG (the one used with ragvqa embed)",
        )
    raise KnowledgeBaseError(
        f"{kb.root} was embedded with {recorded}, but the profile needs a {kind} retriever",
        hint=f"pass --retriever {kind}:PATH_OR_HUB_ID and embed the KB with it, or use a profile for {recorded}",
    )


def _mismatch_hint(kb_dir: str | Path | KBDir, recorded: str, wanted: str) -> str:
    """How to get out of a KB / profile retriever mismatch: the profile made for
    the KB's retriever, else re-embedding the KB with the profile's."""
    matching = sorted(name for name, p in PROFILES.items() if p.retriever == recorded)
    embed = as_kb_dir(kb_dir).embed_command(wanted, force=True)
    if matching:
        return f"use --profile {matching[0]} for this KB, or re-embed it: {embed}"
    return f"pass --retriever {recorded}, or re-embed the KB: {embed}"


def build_pipeline(
    kb_dir: str | Path | KBDir | None,
    profile: str | Profile | None = "offline",
    *,
    retriever_spec: str | None = None,
    generator_config: GeneratorConfig | None = None,
    k: int | None = None,
    device: str | None = None,
    dtype: str | None = None,
    with_generator: bool = True,
    nprobe: int | None = None,
    ef_search: int | None = None,
    progress: Progress | None = None,
) -> RAGPipeline:
    """Load the retriever, the KB index and the generator once.

    Args:
        kb_dir: a KB built and embedded with the same retriever; None only for
            a no-retrieval pipeline (k = 0).
        profile: a profile name (``offline``, ``paper``, ...), a Profile, or
            None (the KB's recorded retriever; only with
            ``with_generator=False``).
        retriever_spec: overrides the profile's retriever (``KIND:ARG``).
        generator_config: overrides the profile's generator.
        k: overrides the profile's k (0: no retrieval; nothing retrieval-side
            is loaded).
        device, dtype: override the profile's retriever device and dtype.
        with_generator: False loads retrieval only (search, retrieval-only eval).
        nprobe, ef_search: override the index's saved search parameters.
        progress: called with one line before each slow step ("loading ...").
    Raises:
        KnowledgeBaseError: the KB is missing, unfinished, not embedded, not
            indexed, or embedded with another retriever.
        InputError: bad profile, spec, k, device or dtype.
        GeneratorError / ModelError / MissingDependencyError: the generator
            cannot be loaded or reached.
    """
    from ragvqa.generation.registry import load_generator

    say = progress or (lambda line: log.info("%s", line))
    started = time.perf_counter()
    if profile is None:
        if with_generator:
            raise InputError("a profile is needed to answer questions", hint="pass --profile offline (or paper)")
        prof = KB_DEFAULT
    else:
        prof = get_profile(profile) if isinstance(profile, str) else profile
    changes: dict[str, object] = {}
    if k is not None:
        changes["k"] = check_k(k)
    if generator_config is not None:
        changes["generator"] = generator_config
    if device is not None:
        changes["device"] = device
    if dtype is not None:
        changes["dtype"] = dtype
    prof = prof.with_overrides(**changes) if changes else prof
    check_k(prof.k)
    device_name = resolve_device(prof.device)
    dtype_name = resolve_dtype(prof.dtype, device_name)  # a bad name fails here, before any model loads

    # 1. Checks that need no model: the KB (built, embedded, indexed) and the spec.
    searcher = None
    spec = None
    if prof.k > 0:
        if kb_dir is None:
            raise KnowledgeBaseError(
                "no knowledge base given", hint="pass --kb KB_DIR, or --k 0 to answer without retrieval"
            )
        from ragvqa.index.search import KBSearcher

        # One KBDir for the whole load: each manifest is read once and cached.
        kb = as_kb_dir(kb_dir)
        kb.require_finished()  # a missing or half-built KB names `ragvqa build-kb`
        spec = resolve_retriever_spec(kb, prof.retriever, retriever_spec)
        prof = prof.with_overrides(retriever=spec)
        searcher = KBSearcher(kb, None, nprobe=nprobe, ef_search=ef_search)

    # 2. A generator server is a cheap ping: an unreachable one fails before the retriever loads.
    generator = None
    if with_generator and prof.generator.backend == "openai":
        say(f"connecting to the generator server {prof.generator.base_url}")
        generator = load_generator(prof.generator)

    # 3. The slow part: the models.
    retriever = None
    try:
        if searcher is not None and spec is not None:
            from ragvqa.index.search import check_retriever
            from ragvqa.retriever.registry import load_retriever

            # "auto" depends on the retriever kind (bfloat16 on a CPU only for the MiniLM kinds).
            dtype_name = resolve_dtype(prof.dtype, device_name, spec.partition(":")[0])
            say(f"loading the retriever {spec} ({device_name}, {dtype_name})")
            retriever = load_retriever(spec, device=device_name, dtype=dtype_name, instruction=prof.instruction)
            check_retriever(searcher.dir, retriever)
            searcher.retriever = retriever
        if with_generator and generator is None:
            say(f"loading the generator {prof.generator.backend}:{prof.generator.model}")
            generator = load_generator(prof.generator)
    except BaseException:
        for part in (generator, searcher):
            close = getattr(part, "close", None)
            if callable(close):
                close()
        raise
    pipeline = RAGPipeline(retriever, searcher, generator, prof, retriever_spec=spec)
    pipeline.load_seconds = time.perf_counter() - started
    log.info("pipeline %s loaded in %.1f s", prof.name, pipeline.load_seconds)
    return pipeline
