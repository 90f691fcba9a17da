"""The S3 dialect: a request signed with AWS Signature V4 is served by the same operations as OSS
(``oss_emulator.s3`` renames its headers, parameters and error codes); this part decides which
dialect a request speaks and does what differs for S3: authentication, the aws-chunked body,
response header names, the error body."""

from __future__ import annotations

import functools
import re
from typing import Dict, List, Optional, Tuple

from .. import s3, s3auth, s3body, xmlgen
from ..auth import AuthRequest
from ..store import StoreError


class S3Dialect:
    _s3 = False  # whether the current request speaks S3 (set by _take_dialect)

    def _take_dialect(self, wire_headers, params: Dict[str, str]) -> None:
        self._s3 = s3auth.is_signed_s3(wire_headers.get('Authorization', ''), params)
        if self._s3:
            self.headers = s3.oss_view_of_headers(wire_headers)

    def _s3_only_subresource(self, params: Dict[str, str]) -> Optional[str]:
        return s3.unsupported_subresource(params) if self._s3 else None

    def _dialect_params(self, op: str, params: Dict[str, str]) -> Dict[str, str]:
        return s3.s3_params(op, params) if self._s3 else params

    def _dialect_response_headers(self, headers: Optional[List[Tuple[str, str]]]):
        return s3.s3_response_headers(headers or [], self._rid) if self._s3 else headers

    def _authenticate(self, wire_headers, bucket, key, params, raw_path, query) -> None:
        if not self._s3:
            self.emu.auth.verify(AuthRequest(self.command, bucket, key, params, wire_headers.items()))
            return
        header_values = functools.partial(_all_values, wire_headers)
        grant = s3auth.verify(s3auth.S3Request(self.command, raw_path, query, header_values),
                              self.emu.auth.credentials)
        self._body_decoder = functools.partial(s3body.decoded_body, header_values=header_values,
                                               signer=grant.chunk_signer)

    def _error_body(self, e: StoreError) -> bytes:
        if self._s3:
            return s3.error_body(e.code, e.message, self.path.partition('?')[0], self._rid, self.emu.host_id,
                                 e.details)
        extra = ''
        if e.code == 'SignatureDoesNotMatch':
            extra = '<OSSAccessKeyId>%s</OSSAccessKeyId>' % xmlgen.escape(self._access_key_hint())
        return xmlgen.error(e.code, e.message, self._rid, self.emu.host_id, extra)

    def _access_key_hint(self) -> str:
        auth = self.headers.get('Authorization', '')
        m = re.match(r'OSS (\S+?):', auth)
        return m.group(1) if m else ''


def _all_values(headers, name: str) -> List[str]:
    return headers.get_all(name) or []
