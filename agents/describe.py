"""Image descriptions from a vision model, for posts that come with an image but no caption.

The request is the ``describe_image`` template with the image attached as an ``image_url`` content
part (Pillow opens, validates and downscales it first), sent through the pipeline's chat model.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..hashing import content_key
from ..prompts import load_template
from .cache import CachedCall
from .images import image_part
from .schemas import Usage

if TYPE_CHECKING:
    from .batch import KnowledgeBuilder

__all__ = ["describe_image"]


async def describe_image(
    builder: KnowledgeBuilder,
    *,
    image_path: Path | None = None,
    image_bytes: bytes | None = None,
    template: str = "describe_image",
    max_side: int = 1024,
) -> str:
    """One sentence on what the image shows; ImageError when the image cannot be read.

    The template is looked up in the chain's ``template_dirs`` first; the call goes through the chain's
    retry policy and its cache (the same image and template: no second call); Pillow decodes in a worker
    thread, off the event loop.
    """
    from langchain_core.messages import HumanMessage

    chain = builder.chain
    assert chain is not None, "the builder is open"
    part = await asyncio.to_thread(_image_part, image_path, image_bytes, max_side)
    prompt = load_template(template, search_dirs=chain.template_dirs)
    messages = prompt.chat_prompt().format_messages()
    messages[-1] = HumanMessage(content=[{"type": "text", "text": messages[-1].text}, part])
    key = content_key(
        stage="describe",
        template=prompt.ref,
        messages=[(m.type, m.content) for m in messages],
        model=chain.model_name,
        params=chain.params,
    )
    if chain.cache is not None and isinstance(hit := await chain.cache.alookup(key), CachedCall):
        return str(hit.output["description"])
    try:
        async for attempt in chain.retry.copy():
            with attempt:
                answer = await chain.model.ainvoke(messages, {"run_name": "describe_image", "tags": ["kecpm"]})
    except BaseException:
        if chain.cache is not None:
            chain.cache.release_soon(key)
        raise
    description = " ".join(answer.text.split())
    if chain.cache is not None:
        chain.cache.put_call_soon(
            key, stage="describe", template=prompt.ref, model=chain.model_name,
            output={"description": description}, usage=Usage(calls=1),
        )  # fmt: skip
    return description


def _image_part(image_path: Path | None, image_bytes: bytes | None, max_side: int) -> dict[str, Any]:
    if image_bytes is None:
        assert image_path is not None
        return image_part(image_path, max_side=max_side)
    # Pillow validates and re-encodes from a file; a private temporary folder keeps nothing behind.
    with tempfile.TemporaryDirectory(prefix="kecpm-image-") as folder:
        path = Path(folder) / "image"
        path.write_bytes(image_bytes)
        return image_part(path, max_side=max_side)
