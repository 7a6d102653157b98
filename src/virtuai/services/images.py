"""Images: the read-only root file systems virtual clusters' nodes are made from.

Every user may list them; administrators import and delete them.  An import
reads a tarball or a directory *on the server's machine*, as the server's
user (root): the path is not uploaded, so only administrators may name one.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from virtuai.errors import Conflict, InvalidRequest, NotFound, NotOffered
from virtuai.host.sandbox import JobImage
from virtuai.services.access import Caller
from virtuai.services.vclusters import LIVE, VcRuntimeAccess
from virtuai.store.models import VirtualClusterRow
from virtuai.vcruntime import Image


def job_image(access: VcRuntimeAccess | None, name: str) -> JobImage:
    """Image ``name`` as a sandbox on this server uses it; refused naming ``image``.

    Any registered image may be named by any tenant: images are read-only roots made by
    administrators, holding no tenant's data (as ``virtuai image list`` shows them to all).
    """
    if access is None or access.runtime is None:
        reason = access.unavailable if access is not None else "no images on this server"
        raise NotOffered(f"sandboxes over images are not offered here: {reason}", field="image")
    try:
        return access.runtime.job_image(name)
    except NotFound:
        raise InvalidRequest(
            f"image {name} does not exist (`virtuai image list`)", field="image"
        ) from None


def list_images(caller: Caller, access: VcRuntimeAccess) -> list[Image]:
    return access.require().images.list()


def import_image(
    caller: Caller,
    access: VcRuntimeAccess,
    name: str,
    *,
    tarball: str | None = None,
    directory: str | None = None,
) -> Image:
    caller.require_admin("import images")
    runtime = access.require()
    if (tarball is None) == (directory is None):
        raise InvalidRequest("give exactly one of from_tar and from_dir", field="from_tar")
    source = tarball if tarball is not None else directory
    assert source is not None
    if not source.startswith("/"):
        raise InvalidRequest(
            f"{source!r}: give an absolute path on the server's machine",
            field="from_tar" if tarball is not None else "from_dir",
        )
    if tarball is not None:
        return runtime.images.import_tar(name, Path(tarball))
    return runtime.images.import_dir(name, Path(source))


def delete_image(session: Session, caller: Caller, access: VcRuntimeAccess, name: str) -> None:
    """Remove an imported image that no cluster (recorded, or still to be built) uses."""
    caller.require_admin("delete images")
    runtime = access.require()
    users = list(
        session.scalars(
            select(VirtualClusterRow.name).where(
                VirtualClusterRow.image == name, VirtualClusterRow.state.in_(LIVE)
            )
        )
    )
    if users:
        raise Conflict(f"image {name} is used by virtual clusters {', '.join(users)}", field="name")
    runtime.images.get(name)  # NotFound for an unknown image
    runtime.delete_image(name)
