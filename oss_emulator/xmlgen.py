"""XML response bodies in the shape OSS returns them (and oss2 parses them)."""

from __future__ import annotations

import time
from typing import Dict, Iterable, List, Optional
from urllib.parse import quote
from xml.sax.saxutils import escape

from .store import Bucket, ListPage, ObjectMeta, PartMeta, Upload

HEAD = '<?xml version="1.0" encoding="UTF-8"?>\n'
OWNER_ID = '1000000000000000'
OWNER_NAME = 'ossimport-emulator'


def iso8601(ts: float) -> str:
    # oss2 parses exactly '%Y-%m-%dT%H:%M:%S.000Z', so sub-second precision cannot be sent
    return time.strftime('%Y-%m-%dT%H:%M:%S.000Z', time.gmtime(ts))


def _x(text: str) -> str:
    # XML 1.0 cannot carry most control characters; OSS users must use url encoding for those
    return escape(text)


def enc(text: str, url: bool) -> str:
    # oss2 decodes with unquote (not unquote_plus), so a space must become %20, never '+'
    return quote(text, safe='/') if url else text


def _owner() -> str:
    return '<Owner><ID>%s</ID><DisplayName>%s</DisplayName></Owner>' % (OWNER_ID, OWNER_NAME)


def error(code: str, message: str, request_id: str, host_id: str, extra: str = '') -> bytes:
    return (HEAD + '<Error><Code>%s</Code><Message>%s</Message><RequestId>%s</RequestId><HostId>%s</HostId>%s'
            '</Error>\n' % (_x(code), _x(message), request_id, _x(host_id), extra)).encode()


def _contents(m: ObjectMeta, url: bool, owner: bool) -> str:
    return ('<Contents><Key>%s</Key><LastModified>%s</LastModified><ETag>"%s"</ETag><Type>%s</Type>'
            '<Size>%d</Size><StorageClass>%s</StorageClass>%s</Contents>'
            % (_x(enc(m.key, url)), iso8601(m.mtime), m.etag, m.otype, m.size, m.storage_class,
               _owner() if owner else ''))


def list_objects(bucket: str, prefix: str, marker: str, max_keys: int, delimiter: str, url: bool,
                 page: ListPage) -> bytes:
    out = [HEAD, '<ListBucketResult><Name>%s</Name><Prefix>%s</Prefix><Marker>%s</Marker><MaxKeys>%d</MaxKeys>'
           '<Delimiter>%s</Delimiter>' % (bucket, _x(enc(prefix, url)), _x(enc(marker, url)), max_keys,
                                          _x(enc(delimiter, url)))]
    if url:
        out.append('<EncodingType>url</EncodingType>')
    out.append('<IsTruncated>%s</IsTruncated>' % ('true' if page.truncated else 'false'))
    if page.truncated:
        out.append('<NextMarker>%s</NextMarker>' % _x(enc(page.next_marker, url)))
    out.extend(_contents(m, url, True) for m in page.objects)
    out.extend('<CommonPrefixes><Prefix>%s</Prefix></CommonPrefixes>' % _x(enc(p, url)) for p in page.prefixes)
    out.append('</ListBucketResult>\n')
    return ''.join(out).encode()


def list_objects_v2(bucket: str, prefix: str, start_after: Optional[str], token: Optional[str], max_keys: int,
                    delimiter: str, url: bool, owner: bool, page: ListPage, next_token: str) -> bytes:
    out = [HEAD, '<ListBucketResult><Name>%s</Name><Prefix>%s</Prefix>' % (bucket, _x(enc(prefix, url)))]
    if start_after is not None:
        out.append('<StartAfter>%s</StartAfter>' % _x(enc(start_after, url)))
    if token is not None:
        out.append('<ContinuationToken>%s</ContinuationToken>' % _x(token))
    out.append('<MaxKeys>%d</MaxKeys><Delimiter>%s</Delimiter>' % (max_keys, _x(enc(delimiter, url))))
    if url:
        out.append('<EncodingType>url</EncodingType>')
    out.append('<IsTruncated>%s</IsTruncated>' % ('true' if page.truncated else 'false'))
    if page.truncated:
        out.append('<NextContinuationToken>%s</NextContinuationToken>' % _x(next_token))
    out.append('<KeyCount>%d</KeyCount>' % (len(page.objects) + len(page.prefixes)))
    out.extend(_contents(m, url, owner) for m in page.objects)
    out.extend('<CommonPrefixes><Prefix>%s</Prefix></CommonPrefixes>' % _x(enc(p, url)) for p in page.prefixes)
    out.append('</ListBucketResult>\n')
    return ''.join(out).encode()


def list_buckets(buckets: Iterable[Bucket], prefix: str, marker: str, max_keys: int, truncated: bool,
                 next_marker: str, endpoint: str) -> bytes:
    out = [HEAD, '<ListAllMyBucketsResult>']
    if prefix:
        out.append('<Prefix>%s</Prefix>' % _x(prefix))
    if marker:
        out.append('<Marker>%s</Marker>' % _x(marker))
    out.append('<MaxKeys>%d</MaxKeys><IsTruncated>%s</IsTruncated>' % (max_keys, 'true' if truncated else 'false'))
    if truncated:
        out.append('<NextMarker>%s</NextMarker>' % _x(next_marker))
    out.append(_owner() + '<Buckets>')
    for b in buckets:
        out.append('<Bucket><CreationDate>%s</CreationDate><ExtranetEndpoint>%s</ExtranetEndpoint>'
                   '<IntranetEndpoint>%s</IntranetEndpoint><Location>oss-cn-hangzhou</Location>'
                   '<Name>%s</Name><Region>cn-hangzhou</Region><StorageClass>%s</StorageClass></Bucket>'
                   % (iso8601(b.created), endpoint, endpoint, b.name, b.storage_class))
    out.append('</Buckets></ListAllMyBucketsResult>\n')
    return ''.join(out).encode()


def bucket_info(b: Bucket, endpoint: str) -> bytes:
    return (HEAD + '<BucketInfo><Bucket><AccessMonitor>Disabled</AccessMonitor><CreationDate>%s</CreationDate>'
            '<ExtranetEndpoint>%s</ExtranetEndpoint><IntranetEndpoint>%s</IntranetEndpoint>'
            '<Location>oss-cn-hangzhou</Location><StorageClass>%s</StorageClass><Name>%s</Name>%s'
            '<AccessControlList><Grant>%s</Grant></AccessControlList>'
            '<DataRedundancyType>LRS</DataRedundancyType></Bucket></BucketInfo>\n'
            % (iso8601(b.created), endpoint, endpoint, b.storage_class, b.name, _owner(), b.acl)).encode()


def location() -> bytes:
    return (HEAD + '<LocationConstraint>oss-cn-hangzhou</LocationConstraint>\n').encode()


def acl(grant: str) -> bytes:
    return (HEAD + '<AccessControlPolicy>%s<AccessControlList><Grant>%s</Grant></AccessControlList>'
            '</AccessControlPolicy>\n' % (_owner(), grant)).encode()


def empty_live_channels(prefix: str, marker: str, max_keys: int) -> bytes:
    return (HEAD + '<ListLiveChannelResult><Prefix>%s</Prefix><Marker>%s</Marker><MaxKeys>%d</MaxKeys>'
            '<IsTruncated>false</IsTruncated><NextMarker></NextMarker></ListLiveChannelResult>\n'
            % (_x(prefix), _x(marker), max_keys)).encode()


def copy_result(m: ObjectMeta) -> bytes:
    return (HEAD + '<CopyObjectResult><ETag>"%s"</ETag><LastModified>%s</LastModified></CopyObjectResult>\n'
            % (m.etag, iso8601(m.mtime))).encode()


def copy_part_result(p: PartMeta) -> bytes:
    return (HEAD + '<CopyPartResult><LastModified>%s</LastModified><ETag>"%s"</ETag></CopyPartResult>\n'
            % (iso8601(p.mtime), p.etag)).encode()


def delete_result(keys: List[str], url: bool) -> bytes:
    out = [HEAD, '<DeleteResult>']
    if url:
        out.append('<EncodingType>url</EncodingType>')
    out.extend('<Deleted><Key>%s</Key></Deleted>' % _x(enc(k, url)) for k in keys)
    out.append('</DeleteResult>\n')
    return ''.join(out).encode()


def init_upload(bucket: str, key: str, upload_id: str, url: bool) -> bytes:
    out = HEAD + '<InitiateMultipartUploadResult><Bucket>%s</Bucket><Key>%s</Key><UploadId>%s</UploadId>' % (
        bucket, _x(enc(key, url)), upload_id)
    if url:
        out += '<EncodingType>url</EncodingType>'
    return (out + '</InitiateMultipartUploadResult>\n').encode()


def complete_upload(bucket: str, key: str, m: ObjectMeta, url: bool, location_url: str) -> bytes:
    out = HEAD + '<CompleteMultipartUploadResult>'
    if url:
        out += '<EncodingType>url</EncodingType>'
    out += ('<Location>%s</Location><Bucket>%s</Bucket><Key>%s</Key><ETag>"%s"</ETag>'
            '</CompleteMultipartUploadResult>\n' % (_x(location_url), bucket, _x(enc(key, url)), m.etag))
    return out.encode()


def list_parts(bucket: str, up: Upload, marker: int, max_parts: int, parts: List[PartMeta], truncated: bool,
               url: bool) -> bytes:
    out = [HEAD, '<ListPartsResult><Bucket>%s</Bucket>' % bucket]
    if url:
        out.append('<EncodingType>url</EncodingType>')
    out.append('<Key>%s</Key><UploadId>%s</UploadId><StorageClass>Standard</StorageClass>'
               '<PartNumberMarker>%d</PartNumberMarker><NextPartNumberMarker>%d</NextPartNumberMarker>'
               '<MaxParts>%d</MaxParts><IsTruncated>%s</IsTruncated>'
               % (_x(enc(up.key, url)), up.upload_id, marker, parts[-1].number if parts else marker, max_parts,
                  'true' if truncated else 'false'))
    for p in parts:
        out.append('<Part><PartNumber>%d</PartNumber><LastModified>%s</LastModified><ETag>"%s"</ETag>'
                   '<HashCrc64ecma>%d</HashCrc64ecma><Size>%d</Size></Part>'
                   % (p.number, iso8601(p.mtime), p.etag, p.crc64, p.size))
    out.append('</ListPartsResult>\n')
    return ''.join(out).encode()


def list_uploads(bucket: str, prefix: str, delimiter: str, key_marker: str, upload_id_marker: str,
                 max_uploads: int, uploads: List[Upload], prefixes: List[str], truncated: bool, next_key: str,
                 next_id: str, url: bool) -> bytes:
    out = [HEAD, '<ListMultipartUploadsResult><Bucket>%s</Bucket>' % bucket]
    if url:
        out.append('<EncodingType>url</EncodingType>')
    out.append('<KeyMarker>%s</KeyMarker><UploadIdMarker>%s</UploadIdMarker><NextKeyMarker>%s</NextKeyMarker>'
               '<NextUploadIdMarker>%s</NextUploadIdMarker><Delimiter>%s</Delimiter><Prefix>%s</Prefix>'
               '<MaxUploads>%d</MaxUploads><IsTruncated>%s</IsTruncated>'
               % (_x(enc(key_marker, url)), upload_id_marker, _x(enc(next_key, url)), next_id,
                  _x(enc(delimiter, url)), _x(enc(prefix, url)), max_uploads, 'true' if truncated else 'false'))
    for u in uploads:
        out.append('<Upload><Key>%s</Key><UploadId>%s</UploadId><StorageClass>Standard</StorageClass>'
                   '<Initiated>%s</Initiated></Upload>' % (_x(enc(u.key, url)), u.upload_id, iso8601(u.initiated)))
    out.extend('<CommonPrefixes><Prefix>%s</Prefix></CommonPrefixes>' % _x(enc(p, url)) for p in prefixes)
    out.append('</ListMultipartUploadsResult>\n')
    return ''.join(out).encode()


def s3_error(code: str, message: str, resource: str, request_id: str, host_id: str,
             details: Dict[str, str]) -> bytes:
    extra = ''.join('<%s>%s</%s>' % (k, _x(v), k) for k, v in details.items())
    return (HEAD + '<Error><Code>%s</Code><Message>%s</Message>%s<Resource>%s</Resource><RequestId>%s</RequestId>'
            '<HostId>%s</HostId></Error>\n' % (_x(code), _x(message), extra, _x(resource), request_id,
                                                _x(host_id))).encode()
