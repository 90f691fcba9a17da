"""The emulator's S3-compatible API (as real OSS serves it) with the real boto3 SDK, our own S3
driver, and oss2 reading back what S3 wrote (and the other way round).

Uses the session ``emulator`` fixture of conftest.py (a subprocess on a free loopback port).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import os
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

import boto3
import botocore.auth
import botocore.config
import oss2
import pytest
import requests
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from ossimport_dist.crc64 import crc64
from ossimport_dist.storage.s3 import S3Destination

AWKWARD_KEYS = ['plain', 'with space', 'plus+sign', 'pct%41%', 'hash#tag', 'q?mark&amp=1', u'中文/文件名',
                u'ü-é/ñ', 'a/b/c', 'tilde~star*(paren)', "quote'dq\"", 'x' * 900]
MIB = 1024 * 1024


def s3_client(emulator, checksums='when_required', key_id=None, secret=None):
    config = botocore.config.Config(
        signature_version='s3v4', s3={'addressing_style': 'path'}, retries={'total_max_attempts': 1},
        request_checksum_calculation=checksums, response_checksum_validation=checksums)
    return boto3.client('s3', endpoint_url=emulator.endpoint, region_name='us-east-1',
                        aws_access_key_id=key_id or emulator.key_id,
                        aws_secret_access_key=secret or emulator.secret, config=config)


def oss_bucket(emulator, name):
    return oss2.Bucket(oss2.Auth(emulator.key_id, emulator.secret), emulator.endpoint, name)


def error_of(excinfo):
    err = excinfo.value.response
    return err['ResponseMetadata']['HTTPStatusCode'], err['Error'].get('Code')


@pytest.fixture(params=['when_required', 'when_supported'])
def s3(request, emulator):
    return s3_client(emulator, request.param)


@pytest.fixture
def s3_bucket(emulator):
    client = s3_client(emulator)
    name = 's3-' + uuid.uuid4().hex[:20]
    client.create_bucket(Bucket=name)
    yield name
    emulator.set_faults(None)


# ------------------------------------------------------------------ objects
def test_put_get_head_awkward_keys(s3, s3_bucket):
    for i, key in enumerate(AWKWARD_KEYS):
        data = os.urandom(1000 + i)
        put = s3.put_object(Bucket=s3_bucket, Key=key, Body=data, ContentType='text/x-test',
                            Metadata={'index': str(i)})
        headers = put['ResponseMetadata']['HTTPHeaders']
        assert int(headers['x-oss-hash-crc64ecma']) == crc64(data), key
        assert headers['x-amz-request-id']
        assert put['ETag'].strip('"').lower() == hashlib.md5(data).hexdigest()
        got = s3.get_object(Bucket=s3_bucket, Key=key)
        assert got['Body'].read() == data, key
        assert got['Metadata'] == {'index': str(i)} and got['ContentType'] == 'text/x-test'
        head = s3.head_object(Bucket=s3_bucket, Key=key)
        assert head['ContentLength'] == len(data) and head['ETag'] == put['ETag']
        assert int(head['ResponseMetadata']['HTTPHeaders']['x-oss-hash-crc64ecma']) == crc64(data)
    listed = [o['Key'] for o in s3.list_objects_v2(Bucket=s3_bucket)['Contents']]
    assert listed == sorted(AWKWARD_KEYS, key=lambda k: k.encode())


def test_empty_object_and_big_single_put(s3, s3_bucket):
    s3.put_object(Bucket=s3_bucket, Key='empty', Body=b'')
    assert s3.get_object(Bucket=s3_bucket, Key='empty')['Body'].read() == b''
    data = os.urandom(3 * MIB + 17)  # botocore sends Expect: 100-continue for bodies this size
    put = s3.put_object(Bucket=s3_bucket, Key='big', Body=data)
    assert int(put['ResponseMetadata']['HTTPHeaders']['x-oss-hash-crc64ecma']) == crc64(data)
    assert s3.get_object(Bucket=s3_bucket, Key='big')['Body'].read() == data


def test_metadata_crosses_between_s3_and_oss(emulator, s3_bucket):
    client = s3_client(emulator)
    oss = oss_bucket(emulator, s3_bucket)
    client.put_object(Bucket=s3_bucket, Key='from-s3', Body=b'one', Metadata={'Color': 'blue', 'n': '1'},
                      ContentType='text/plain', ContentDisposition='attachment; filename="a.txt"',
                      CacheControl='no-cache', ContentEncoding='identity')
    head = oss.head_object('from-s3')
    assert head.headers['x-oss-meta-color'] == 'blue' and head.headers['x-oss-meta-n'] == '1'
    assert head.content_type == 'text/plain' and head.headers['Cache-Control'] == 'no-cache'
    assert head.headers['Content-Disposition'] == 'attachment; filename="a.txt"'
    assert head.headers['Content-Encoding'] == 'identity'
    assert not any(k.lower().startswith('x-amz-meta-') for k in head.headers)

    oss.put_object('from-oss', b'two', headers={'x-oss-meta-shape': 'round', 'Content-Type': 'a/b',
                                                 'Content-Language': 'de'})
    got = client.get_object(Bucket=s3_bucket, Key='from-oss')
    assert got['Metadata'] == {'shape': 'round'} and got['ContentType'] == 'a/b'
    assert got['ContentLanguage'] == 'de'
    assert not any(k.startswith('x-oss-meta-') for k in got['ResponseMetadata']['HTTPHeaders'])


def test_range_and_conditions(emulator, s3_bucket):
    client = s3_client(emulator)
    data = bytes(range(256)) * 40
    etag = client.put_object(Bucket=s3_bucket, Key='r', Body=data)['ETag']
    part = client.get_object(Bucket=s3_bucket, Key='r', Range='bytes=10-19')
    assert part['Body'].read() == data[10:20] and part['ContentRange'] == 'bytes 10-19/%d' % len(data)
    assert client.get_object(Bucket=s3_bucket, Key='r', Range='bytes=-5')['Body'].read() == data[-5:]
    assert client.get_object(Bucket=s3_bucket, Key='r', Range='bytes=10000-')['Body'].read() == data[10000:]
    with pytest.raises(ClientError) as ei:
        client.get_object(Bucket=s3_bucket, Key='r', Range='bytes=%d-' % (len(data) + 1))
    assert error_of(ei) == (416, 'InvalidRange')
    with pytest.raises(ClientError) as ei:
        client.get_object(Bucket=s3_bucket, Key='r', IfMatch='"0123"')
    assert error_of(ei) == (412, 'PreconditionFailed')
    with pytest.raises(ClientError) as ei:
        client.get_object(Bucket=s3_bucket, Key='r', IfNoneMatch=etag)
    assert error_of(ei)[0] == 304
    # the 304 must leave the kept-alive connection usable
    assert client.get_object(Bucket=s3_bucket, Key='r', IfMatch=etag)['Body'].read() == data


def test_copy_object_and_upload_part_copy(emulator, s3_bucket):
    client = s3_client(emulator)
    data = os.urandom(300 * 1024)
    src_key = u'src dir/ü+#?.bin'
    client.put_object(Bucket=s3_bucket, Key=src_key, Body=data, Metadata={'origin': 'src'})
    client.copy_object(Bucket=s3_bucket, Key='copy', CopySource={'Bucket': s3_bucket, 'Key': src_key})
    got = client.get_object(Bucket=s3_bucket, Key='copy')
    assert got['Body'].read() == data and got['Metadata'] == {'origin': 'src'}
    client.copy_object(Bucket=s3_bucket, Key='replaced', CopySource={'Bucket': s3_bucket, 'Key': src_key},
                       MetadataDirective='REPLACE', Metadata={'origin': 'new'}, ContentType='x/y')
    head = client.head_object(Bucket=s3_bucket, Key='replaced')
    assert head['Metadata'] == {'origin': 'new'} and head['ContentType'] == 'x/y'

    up = client.create_multipart_upload(Bucket=s3_bucket, Key='assembled')['UploadId']
    source = {'Bucket': s3_bucket, 'Key': src_key}
    p1 = client.upload_part_copy(Bucket=s3_bucket, Key='assembled', UploadId=up, PartNumber=1, CopySource=source,
                                 CopySourceRange='bytes=0-204799')['CopyPartResult']['ETag']
    p2 = client.upload_part_copy(Bucket=s3_bucket, Key='assembled', UploadId=up, PartNumber=2, CopySource=source,
                                 CopySourceRange='bytes=204800-307199')['CopyPartResult']['ETag']
    client.complete_multipart_upload(Bucket=s3_bucket, Key='assembled', UploadId=up, MultipartUpload={
        'Parts': [{'PartNumber': 1, 'ETag': p1}, {'PartNumber': 2, 'ETag': p2}]})
    assert client.get_object(Bucket=s3_bucket, Key='assembled')['Body'].read() == data


def test_delete_object_and_objects(emulator, s3_bucket):
    client = s3_client(emulator, 'when_supported')
    for key in AWKWARD_KEYS:
        client.put_object(Bucket=s3_bucket, Key=key, Body=b'x')
    client.delete_object(Bucket=s3_bucket, Key='plain')
    with pytest.raises(ClientError) as ei:
        client.get_object(Bucket=s3_bucket, Key='plain')
    assert error_of(ei) == (404, 'NoSuchKey')
    assert ei.value.response['ResponseMetadata']['RequestId']
    rest = AWKWARD_KEYS[1:]
    result = client.delete_objects(Bucket=s3_bucket, Delete={'Objects': [{'Key': k} for k in rest]})
    assert sorted(d['Key'] for d in result['Deleted']) == sorted(rest)
    assert client.list_objects_v2(Bucket=s3_bucket)['KeyCount'] == 0


def test_error_body_has_s3_shape(emulator, s3_bucket):
    client = s3_client(emulator)
    url = client.generate_presigned_url('get_object', Params={'Bucket': s3_bucket, 'Key': 'missing'})
    r = requests.get(url, timeout=10)
    assert r.status_code == 404
    assert b'<Error><Code>NoSuchKey</Code><Message>' in r.content
    assert b'<Resource>/%s/missing</Resource>' % s3_bucket.encode() in r.content
    assert b'<RequestId>%s</RequestId>' % r.headers['x-amz-request-id'].encode() in r.content


# ------------------------------------------------------------------ listing
def test_listing_pages_v1_and_v2_with_delimiter(emulator, s3_bucket):
    client = s3_client(emulator)
    keys = ['k/%04d' % i for i in range(1050)] + ['top-%d' % i for i in range(5)] + ['d%d/x' % i for i in range(3)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: client.put_object(Bucket=s3_bucket, Key=k, Body=b'.'), keys))
    want = sorted(keys)

    v1 = client.get_paginator('list_objects').paginate(Bucket=s3_bucket)
    pages = list(v1)
    assert len(pages) == 2 and len(pages[0]['Contents']) == 1000  # S3's default page size
    assert [o['Key'] for p in pages for o in p['Contents']] == want
    v2_pages = list(client.get_paginator('list_objects_v2').paginate(Bucket=s3_bucket,
                                                                   PaginationConfig={'PageSize': 400}))
    assert len(v2_pages) == 3 and [o['Key'] for p in v2_pages for o in p['Contents']] == want

    for op in ('list_objects', 'list_objects_v2'):
        pages = list(client.get_paginator(op).paginate(Bucket=s3_bucket, Delimiter='/',
                                                      PaginationConfig={'PageSize': 3}))
        prefixes = [cp['Prefix'] for p in pages for cp in p.get('CommonPrefixes', [])]
        plain = [o['Key'] for p in pages for o in p.get('Contents', [])]
        assert prefixes == ['d0/', 'd1/', 'd2/', 'k/'], op
        assert plain == ['top-%d' % i for i in range(5)], op
        assert len(pages) == 3, op

    after = client.list_objects_v2(Bucket=s3_bucket, Prefix='k/', StartAfter='k/1040', FetchOwner=True)
    assert [o['Key'] for o in after['Contents']] == ['k/%04d' % i for i in range(1041, 1050)]
    assert after['Contents'][0]['Owner']['ID']
    marked = client.list_objects(Bucket=s3_bucket, Prefix='k/', Marker='k/1045', MaxKeys=2)
    assert [o['Key'] for o in marked['Contents']] == ['k/1046', 'k/1047'] and marked['IsTruncated']


# ---------------------------------------------------------------- multipart
def test_multipart_upload_list_parts_abort(s3, s3_bucket, emulator):
    key = u'multi part/ü+.bin'
    part1, part2 = os.urandom(5 * MIB), os.urandom(123457)
    up = s3.create_multipart_upload(Bucket=s3_bucket, Key=key, Metadata={'kind': 'mpu'},
                                    ContentType='application/x-mpu')['UploadId']
    e1 = s3.upload_part(Bucket=s3_bucket, Key=key, UploadId=up, PartNumber=1, Body=part1)['ETag']
    e2 = s3.upload_part(Bucket=s3_bucket, Key=key, UploadId=up, PartNumber=2, Body=part2)['ETag']
    listed = s3.list_parts(Bucket=s3_bucket, Key=key, UploadId=up)['Parts']
    assert [(p['PartNumber'], p['Size'], p['ETag']) for p in listed] == [(1, len(part1), e1), (2, len(part2), e2)]
    uploads = s3.list_multipart_uploads(Bucket=s3_bucket)['Uploads']
    assert [(u['Key'], u['UploadId']) for u in uploads] == [(key, up)]
    done = s3.complete_multipart_upload(Bucket=s3_bucket, Key=key, UploadId=up, MultipartUpload={
        'Parts': [{'PartNumber': 1, 'ETag': e1}, {'PartNumber': 2, 'ETag': e2}]})
    assert done['ETag'].endswith('-2"')
    got = s3.get_object(Bucket=s3_bucket, Key=key)
    assert got['Body'].read() == part1 + part2 and got['Metadata'] == {'kind': 'mpu'}
    head = oss_bucket(emulator, s3_bucket).head_object(key)
    assert int(head.headers['x-oss-hash-crc64ecma']) == crc64(part1 + part2)
    assert head.object_type == 'Multipart' and head.content_type == 'application/x-mpu'

    doomed = s3.create_multipart_upload(Bucket=s3_bucket, Key='doomed')['UploadId']
    s3.upload_part(Bucket=s3_bucket, Key='doomed', UploadId=doomed, PartNumber=1, Body=b'abc')
    s3.abort_multipart_upload(Bucket=s3_bucket, Key='doomed', UploadId=doomed)
    with pytest.raises(ClientError) as ei:
        s3.list_parts(Bucket=s3_bucket, Key='doomed', UploadId=doomed)
    assert error_of(ei) == (404, 'NoSuchUpload')
    assert s3.list_multipart_uploads(Bucket=s3_bucket).get('Uploads', []) == []


# ------------------------------------------------------------------ buckets
def test_bucket_operations(emulator):
    client = s3_client(emulator)
    name = 's3-bucket-' + uuid.uuid4().hex[:12]
    client.create_bucket(Bucket=name, CreateBucketConfiguration={'LocationConstraint': 'oss-cn-hangzhou'})
    assert name in [b['Name'] for b in client.list_buckets()['Buckets']]
    client.head_bucket(Bucket=name)
    assert client.get_bucket_location(Bucket=name)['LocationConstraint']
    with pytest.raises(ClientError) as ei:
        client.create_bucket(Bucket=name)
    assert error_of(ei) == (409, 'BucketAlreadyOwnedByYou')
    client.put_object(Bucket=name, Key='k', Body=b'v')
    with pytest.raises(ClientError) as ei:
        client.delete_bucket(Bucket=name)
    assert error_of(ei) == (409, 'BucketNotEmpty')
    client.delete_object(Bucket=name, Key='k')
    client.delete_bucket(Bucket=name)
    with pytest.raises(ClientError) as ei:
        client.head_bucket(Bucket=name)
    assert error_of(ei)[0] == 404
    with pytest.raises(ClientError) as ei:
        client.list_objects_v2(Bucket=name)
    assert error_of(ei) == (404, 'NoSuchBucket')
    with pytest.raises(ClientError) as ei:
        client.get_bucket_tagging(Bucket='no-such-bucket-here')
    assert error_of(ei) == (501, 'NotImplemented')


# ------------------------------------------------------------------ auth
def test_wrong_secret_unknown_key_and_skew(emulator, s3_bucket, monkeypatch):
    with pytest.raises(ClientError) as ei:
        s3_client(emulator, secret='wrong').put_object(Bucket=s3_bucket, Key='k', Body=b'x')
    assert error_of(ei) == (403, 'SignatureDoesNotMatch')
    with pytest.raises(ClientError) as ei:
        s3_client(emulator, key_id='nobody').get_object(Bucket=s3_bucket, Key='k')
    assert error_of(ei) == (403, 'InvalidAccessKeyId')
    client = s3_client(emulator)
    with pytest.raises(ClientError) as ei:
        client.get_object(Bucket=s3_bucket, Key='k')
    assert error_of(ei) == (404, 'NoSuchKey')  # nothing was written by the refused PUT
    an_hour_ago = datetime.datetime.utcnow() - datetime.timedelta(hours=1)
    monkeypatch.setattr(botocore.auth, 'get_current_datetime', lambda *a, **k: an_hour_ago)
    with pytest.raises(ClientError) as ei:
        client.list_objects_v2(Bucket=s3_bucket)
    assert error_of(ei) == (403, 'RequestTimeTooSkewed')
    # a URL signed an hour ago for ten minutes has expired
    url = client.generate_presigned_url('get_object', Params={'Bucket': s3_bucket, 'Key': 'k'}, ExpiresIn=600)
    r = requests.get(url, timeout=10)
    assert r.status_code == 403 and b'<Code>AccessDenied</Code>' in r.content


def test_presigned_urls(emulator, s3_bucket):
    client = s3_client(emulator)
    key = u'pre signed/ü+%#?.txt'
    put_url = client.generate_presigned_url('put_object', Params={'Bucket': s3_bucket, 'Key': key,
                                                                  'ContentType': 'text/plain'})
    assert requests.put(put_url, data=b'via url', headers={'Content-Type': 'text/plain'}, timeout=10).ok
    get_url = client.generate_presigned_url('get_object', Params={'Bucket': s3_bucket, 'Key': key})
    r = requests.get(get_url, timeout=10)
    assert r.status_code == 200 and r.content == b'via url'
    assert r.headers['Content-Type'] == 'text/plain'
    tampered = get_url.replace('X-Amz-Signature=', 'X-Amz-Signature=0')
    r = requests.get(tampered, timeout=10)
    assert r.status_code == 403 and b'<Code>SignatureDoesNotMatch</Code>' in r.content


# --------------------------------------------------- bodies: sha256, aws-chunked
class DeclaredPayloadSigner(botocore.auth.S3SigV4Auth):
    """botocore's S3 signer, signing the x-amz-content-sha256 the request declares instead of its own."""

    def _modify_request_before_signing(self, request):
        botocore.auth.SigV4Auth._modify_request_before_signing(self, request)


def sign(emulator, req):
    DeclaredPayloadSigner(Credentials(emulator.key_id, emulator.secret), 's3', 'us-east-1').add_auth(req)


def signed_put(emulator, bucket, key, body, headers, payload_hash):
    """A PUT signed by botocore's own SigV4 signer with the given x-amz-content-sha256."""
    url = '%s/%s/%s' % (emulator.endpoint, bucket, quote(key, safe='/~'))
    req = AWSRequest('PUT', url, data=body, headers=dict(headers, **{'X-Amz-Content-SHA256': payload_hash}))
    sign(emulator, req)
    prepared = req.prepare()
    return requests.put(prepared.url, data=body, headers=dict(prepared.headers), timeout=30)


def signed_chunks(emulator, seed_auth, date_time, chunks):
    """An aws-chunked body of STREAMING-AWS4-HMAC-SHA256-PAYLOAD, each chunk signed after the previous."""
    signature = seed_auth.rsplit('Signature=', 1)[1]
    scope = '%s/us-east-1/s3/aws4_request' % date_time[:8]
    key = ('AWS4' + emulator.secret).encode()
    for part in (date_time[:8], 'us-east-1', 's3', 'aws4_request'):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    out = b''
    for data in list(chunks) + [b'']:
        sts = '\n'.join(('AWS4-HMAC-SHA256-PAYLOAD', date_time, scope, signature,
                         hashlib.sha256(b'').hexdigest(), hashlib.sha256(data).hexdigest()))
        signature = hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()
        out += b'%x;chunk-signature=%s\r\n%s\r\n' % (len(data), signature.encode(), data)
    return out


def streaming_put(emulator, bucket, key, chunks, tamper=False):
    """PUT of aws-chunked signed chunks: the seed signature from botocore, the chunks signed here."""
    url = '%s/%s/%s' % (emulator.endpoint, bucket, quote(key, safe='/~'))
    decoded = b''.join(chunks)
    headers = {'Content-Encoding': 'aws-chunked', 'X-Amz-Decoded-Content-Length': str(len(decoded)),
               'X-Amz-Content-SHA256': 'STREAMING-AWS4-HMAC-SHA256-PAYLOAD', 'x-amz-meta-way': 'chunked'}
    req = AWSRequest('PUT', url, headers=headers)
    sign(emulator, req)
    body = signed_chunks(emulator, req.headers['Authorization'], req.headers['X-Amz-Date'], chunks)
    if tamper:
        body = body.replace(chunks[0][:16], bytes(b ^ 1 for b in chunks[0][:16]), 1)
    sent = dict(req.headers, **{'Content-Length': str(len(body))})
    return requests.put(url, data=body, headers=sent, timeout=30)


def test_streaming_signed_chunks(emulator, s3_bucket):
    chunks = [os.urandom(64 * 1024), os.urandom(64 * 1024), os.urandom(1000)]
    r = streaming_put(emulator, s3_bucket, u'stream ü+.bin', chunks)
    assert r.status_code == 200, r.content
    data = b''.join(chunks)
    assert int(r.headers['x-oss-hash-crc64ecma']) == crc64(data)
    got = oss_bucket(emulator, s3_bucket).get_object(u'stream ü+.bin')
    assert got.read() == data and got.headers['x-oss-meta-way'] == 'chunked'
    assert 'Content-Encoding' not in got.headers  # aws-chunked framed the request, not the object
    r = streaming_put(emulator, s3_bucket, 'tampered', chunks, tamper=True)
    assert r.status_code == 403 and b'<Code>SignatureDoesNotMatch</Code>' in r.content
    assert not oss_bucket(emulator, s3_bucket).object_exists('tampered')


def _trailer_checksums(params, **kwargs):
    # botocore sends aws-chunked bodies with a checksum trailer only over https; ask for it over http
    algorithm = params['context'].get('checksum', {}).get('request_algorithm')
    if isinstance(algorithm, dict):
        algorithm['in'] = 'trailer'


def test_aws_chunked_with_crc32_trailer(emulator, s3_bucket):
    client = s3_client(emulator, 'when_supported')
    client.meta.events.register('before-call.s3.PutObject', _trailer_checksums)
    client.meta.events.register('before-call.s3.UploadPart', _trailer_checksums)
    sent = {}
    client.meta.events.register('before-send.s3.*', lambda request, **kw: sent.update(request.headers))
    data = os.urandom(2 * MIB + 3)
    put = client.put_object(Bucket=s3_bucket, Key='trailer', Body=data, Metadata={'m': '1'})
    assert sent['Content-Encoding'] == b'aws-chunked' or sent['Content-Encoding'] == 'aws-chunked'
    assert sent['X-Amz-Trailer'] in ('x-amz-checksum-crc32', b'x-amz-checksum-crc32')
    assert int(put['ResponseMetadata']['HTTPHeaders']['x-oss-hash-crc64ecma']) == crc64(data)
    assert oss_bucket(emulator, s3_bucket).get_object('trailer').read() == data

    up = client.create_multipart_upload(Bucket=s3_bucket, Key='trailer-mpu')['UploadId']
    e1 = client.upload_part(Bucket=s3_bucket, Key='trailer-mpu', UploadId=up, PartNumber=1, Body=data)['ETag']
    client.complete_multipart_upload(Bucket=s3_bucket, Key='trailer-mpu', UploadId=up,
                                     MultipartUpload={'Parts': [{'PartNumber': 1, 'ETag': e1}]})
    assert client.get_object(Bucket=s3_bucket, Key='trailer-mpu')['Body'].read() == data


def test_body_digest_mismatches_are_refused(emulator, s3_bucket):
    body = b'the body that is sent'
    r = signed_put(emulator, s3_bucket, 'sha', body, {}, hashlib.sha256(b'another body').hexdigest())
    assert r.status_code == 400 and b'<Code>XAmzContentSHA256Mismatch</Code>' in r.content
    wrong_crc = base64.b64encode(zlib.crc32(b'other').to_bytes(4, 'big')).decode()
    r = signed_put(emulator, s3_bucket, 'crc', body, {'x-amz-checksum-crc32': wrong_crc}, 'UNSIGNED-PAYLOAD')
    assert r.status_code == 400 and b'<Code>BadDigest</Code>' in r.content
    r = signed_put(emulator, s3_bucket, 'md5', body, {'Content-MD5': base64.b64encode(b'0' * 16).decode()},
                   hashlib.sha256(body).hexdigest())
    assert r.status_code == 400 and b'<Code>BadDigest</Code>' in r.content
    unsigned_trailer = (b'%x\r\n%s\r\n0\r\nx-amz-checksum-crc32:%s\r\n\r\n'
                        % (len(body), body, wrong_crc.encode()))
    r = signed_put(emulator, s3_bucket, 'trailer', unsigned_trailer,
                   {'Content-Encoding': 'aws-chunked', 'x-amz-trailer': 'x-amz-checksum-crc32',
                    'x-amz-decoded-content-length': str(len(body))}, 'STREAMING-UNSIGNED-PAYLOAD-TRAILER')
    assert r.status_code == 400 and b'<Code>BadDigest</Code>' in r.content
    oss = oss_bucket(emulator, s3_bucket)
    assert not any(oss.object_exists(k) for k in ('sha', 'crc', 'md5', 'trailer'))
    good_crc = base64.b64encode(zlib.crc32(body).to_bytes(4, 'big')).decode()
    r = signed_put(emulator, s3_bucket, 'good', body, {'x-amz-checksum-crc32': good_crc},
                   hashlib.sha256(body).hexdigest())
    assert r.status_code == 200 and oss.get_object('good').read() == body


# ------------------------------------------------------------------ faults
def test_faults_apply_to_s3_requests(emulator, s3_bucket):
    client = s3_client(emulator)
    client.put_object(Bucket=s3_bucket, Key='f', Body=b'1')
    emulator.set_faults('500:1.0:GetObject')
    with pytest.raises(ClientError) as ei:
        client.get_object(Bucket=s3_bucket, Key='f')
    assert error_of(ei) == (500, 'InternalError')
    client.put_object(Bucket=s3_bucket, Key='g', Body=b'2')  # other operations are unaffected
    emulator.set_faults('throttle:1.0:PutObject')
    with pytest.raises(ClientError) as ei:
        client.put_object(Bucket=s3_bucket, Key='h', Body=b'3')
    assert error_of(ei) == (503, 'SlowDown')
    emulator.set_faults(None)
    assert client.get_object(Bucket=s3_bucket, Key='f')['Body'].read() == b'1'


# ------------------------------------------------------- our own S3 driver
def test_s3_destination_driver_into_emulator(emulator, s3_bucket):
    dest = S3Destination(domain=emulator.endpoint, bucket=s3_bucket, prefix=u'dest/ü/',
                         access_key=emulator.key_id, secret_key=emulator.secret, pool_size=4)
    try:
        small = os.urandom(4321)
        dest.put('small file+.bin', small, {'Content-Type': 'text/x-small', 'x-oss-meta-origin': 'driver'})
        entry = dest.head('small file+.bin')
        assert entry.size == len(small) and entry.md5 == hashlib.md5(small).hexdigest().upper()
        assert entry.headers['x-oss-meta-origin'] == 'driver'
        assert dest.head('absent') is None

        parts = [os.urandom(dest.features.min_part_size), os.urandom(dest.features.min_part_size), os.urandom(777)]
        up = dest.init_multipart('big.bin', {'x-oss-meta-kind': 'multipart'})
        etags = [(n, dest.upload_part('big.bin', up, n, p).etag) for n, p in enumerate(parts, 1)]
        assert {n: size for n, (size, _) in dest.list_parts('big.bin', up).items()} == {
            1: len(parts[0]), 2: len(parts[1]), 3: len(parts[2])}
        dest.complete_multipart('big.bin', up, etags)
    finally:
        dest.close()
    oss = oss_bucket(emulator, s3_bucket)
    for key, data in ((u'dest/ü/small file+.bin', small), (u'dest/ü/big.bin', b''.join(parts))):
        got = oss.get_object(key)
        assert got.read() == data
        assert int(got.headers['x-oss-hash-crc64ecma']) == crc64(data)
    assert oss.head_object(u'dest/ü/big.bin').headers['x-oss-meta-kind'] == 'multipart'
    assert oss.head_object(u'dest/ü/small file+.bin').content_type == 'text/x-small'
