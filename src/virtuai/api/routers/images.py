from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, status

from virtuai.api.deps import CallerDep, Context
from virtuai.api.schemas.images import ImageImport, ImageOut
from virtuai.services import images as service
from virtuai.store.db import transaction
from virtuai.vcruntime import Image

router = APIRouter(prefix="/api/v1/images", tags=["images"])


def image_to_api(image: Image) -> ImageOut:
    return ImageOut(
        name=image.name,
        builtin=image.builtin,
        size_bytes=image.size_bytes,
        created_at=None
        if image.created_at is None
        else dt.datetime.fromtimestamp(image.created_at, dt.UTC),
        source=image.source,
    )


@router.get("")
def list_images(caller: CallerDep, context: Context) -> list[ImageOut]:
    return [image_to_api(i) for i in service.list_images(caller, context.vcs)]


@router.post("", status_code=status.HTTP_201_CREATED)
def import_image(body: ImageImport, caller: CallerDep, context: Context) -> ImageOut:
    """Import a root file system from a tarball or a directory on the server's machine
    (administrators only; the server reads it as its own user, root)."""
    image = service.import_image(
        caller, context.vcs, body.name, tarball=body.from_tar, directory=body.from_dir
    )
    return image_to_api(image)


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT)
def delete_image(name: str, caller: CallerDep, context: Context) -> None:
    with transaction(context.sessions) as session:
        service.delete_image(session, caller, context.vcs, name)
