"""The emulator's operations, one part per concern: buckets (and the service's bucket list),
objects, multipart uploads, and the S3 dialect. ``server.OssRequestHandler`` is made of them: it
reads the request, names its operation and calls ``op_<Operation>``; the parts use its body and
response methods (``_read_body``, ``_receive_checked``, ``_send``) and the emulator (``self.emu``)."""

from .bucket import BucketOps
from .multipart import MultipartOps
from .object import ObjectOps
from .s3 import S3Dialect

__all__ = ['BucketOps', 'MultipartOps', 'ObjectOps', 'S3Dialect']
