"""Tests of the OSS emulator with the real oss2 SDK against the emulator running as a subprocess."""

import os
import urllib.request
import uuid

import oss2
import pytest

from oss_emulator import start_process

# The emulator and bucket fixtures are tests/conftest.py's; these keys are for the emulators a test
# starts itself.
AK, SK = 'test-ak', 'test-secret'
AWKWARD = ['plain', 'with space', 'hash#tag', 'pct%41', 'plus+sign', 'q?mark', u'中文/文件名', 'a/b/c', 'ü-é',
           'x' * 1000, 'dot/../dot', 'amp&lt;']


def test_put_get_head_range_delete(bucket):
    data = os.urandom(300 * 1024)
    r = bucket.put_object('obj', data, headers={'x-oss-meta-color': 'blue', 'Content-Type': 'text/x-test'})
    crc = oss2.utils.Crc64(0)
    crc.update(data)
    assert int(r.resp.headers['x-oss-hash-crc64ecma']) == crc.crc
    g = bucket.get_object('obj')
    assert g.read() == data and g.server_crc == g.client_crc
    h = bucket.head_object('obj')
    assert h.content_length == len(data) and h.headers['x-oss-meta-color'] == 'blue'
    assert h.content_type == 'text/x-test' and h.object_type == 'Normal'
    import hashlib
    assert h.etag == hashlib.md5(data).hexdigest().upper()
    assert bucket.get_object('obj', byte_range=(10, 19)).read() == data[10:20]
    assert bucket.get_object('obj', byte_range=(None, 5)).read() == data[-5:]
    assert bucket.get_object('obj', byte_range=(len(data) - 3, None)).read() == data[-3:]
    # OSS answers an unsatisfiable range with the whole object unless asked for standard behaviour
    assert bucket.get_object('obj', byte_range=(len(data) + 5, len(data) + 9)).read() == data
    with pytest.raises(oss2.exceptions.ServerError) as ei:
        bucket.get_object('obj', byte_range=(len(data) + 5, len(data) + 9),
                          headers={'x-oss-range-behavior': 'standard'})
    assert ei.value.status == 416
    with pytest.raises(oss2.exceptions.InvalidDigest):
        bucket.put_object('bad', b'abc', headers={'Content-MD5': '1B2M2Y8AsgTpgAmY7PhCfg=='})
    bucket.delete_object('obj')
    with pytest.raises(oss2.exceptions.NoSuchKey):
        bucket.get_object('obj')
    assert not bucket.object_exists('obj')


def test_chunked_upload_and_copy(bucket):
    data = os.urandom(200000)

    def gen():
        for i in range(0, len(data), 7000):
            yield data[i:i + 7000]

    bucket.put_object('chunked', gen())  # unknown length -> Transfer-Encoding: chunked
    assert bucket.get_object('chunked').read() == data
    bucket.copy_object(bucket.bucket_name, 'chunked', 'copy')
    assert bucket.get_object('copy').read() == data
    bucket.update_object_meta('copy', {'x-oss-meta-k': 'v', 'Content-Type': 'a/b'})
    h = bucket.head_object('copy')
    assert h.headers['x-oss-meta-k'] == 'v' and h.content_type == 'a/b'


def test_listing_v1_v2_pagination_and_awkward_keys(bucket):
    keys = ['k/%04d' % i for i in range(1050)] + AWKWARD
    for k in keys:
        bucket.put_object(k, b'x')
    got = [o.key for o in oss2.ObjectIterator(bucket, max_keys=333)]
    assert got == sorted(keys, key=lambda s: s.encode('utf-8'))
    got2 = [o.key for o in oss2.ObjectIteratorV2(bucket, max_keys=250)]
    assert got2 == got
    top = list(oss2.ObjectIterator(bucket, delimiter='/'))
    assert sorted(o.key for o in top if o.is_prefix()) == ['a/', 'dot/', 'k/', u'中文/']
    r = bucket.list_objects(prefix='k/', max_keys=1000)
    assert r.is_truncated and len(r.object_list) == 1000 and r.next_marker == 'k/0999'
    r = bucket.list_objects_v2(prefix='k/', start_after='k/1040')
    assert [o.key for o in r.object_list] == ['k/%04d' % i for i in range(1041, 1050)]
    for k in AWKWARD:
        assert bucket.get_object(k).read() == b'x'
    result = bucket.batch_delete_objects(AWKWARD)
    assert sorted(result.deleted_keys) == sorted(AWKWARD)


def test_invalid_names(emulator, bucket):
    with pytest.raises(oss2.exceptions.InvalidObjectName):
        bucket.put_object('/leading-slash', b'x')
    import requests
    r = requests.put(emulator.endpoint + '/Bad_Name', timeout=10)  # oss2 refuses such names client-side
    assert r.status_code == 400 and b'<Code>InvalidBucketName</Code>' in r.content
    with pytest.raises(oss2.exceptions.NoSuchBucket):
        oss2.Bucket(oss2.Auth(emulator.key_id, emulator.secret), emulator.endpoint, 'no-such-bucket').get_object('k')
    bucket.put_object('k', b'x')
    with pytest.raises(oss2.exceptions.BucketNotEmpty):
        bucket.delete_bucket()


def test_multipart_reupload_and_list_parts(bucket):
    up = bucket.init_multipart_upload('mp').upload_id
    p1 = os.urandom(150 * 1024)
    bucket.upload_part('mp', up, 1, os.urandom(150 * 1024))
    r1 = bucket.upload_part('mp', up, 1, p1)  # replaces the first upload of part 1
    r2 = bucket.upload_part('mp', up, 2, b'tail')
    parts = bucket.list_parts('mp', up).parts
    assert [(p.part_number, p.size, p.etag) for p in parts] == [(1, len(p1), r1.etag), (2, 4, r2.etag)]
    assert [p.part_number for p in bucket.list_parts('mp', up, marker=1).parts] == [2]
    assert [u.upload_id for u in oss2.MultipartUploadIterator(bucket)] == [up]
    with pytest.raises(oss2.exceptions.ServerError) as ei:
        bucket.complete_multipart_upload('mp', up, [oss2.models.PartInfo(1, 'A' * 32)])
    assert ei.value.code == 'InvalidPart'
    # InvalidPartOrder is not reachable through oss2: it sorts the part list before sending it
    res = bucket.complete_multipart_upload('mp', up, [oss2.models.PartInfo(1, r1.etag), oss2.models.PartInfo(2, r2.etag)])
    assert res.etag.endswith('-2')
    data = bucket.get_object('mp').read()
    assert data == p1 + b'tail'
    assert bucket.head_object('mp').object_type == 'Multipart'
    with pytest.raises(oss2.exceptions.NoSuchUpload):
        bucket.upload_part('mp', up, 3, b'x')
    up2 = bucket.init_multipart_upload('small').upload_id
    e1 = bucket.upload_part('small', up2, 1, b'a').etag
    e2 = bucket.upload_part('small', up2, 2, b'b').etag
    with pytest.raises(oss2.exceptions.ServerError) as ei:
        bucket.complete_multipart_upload('small', up2, [oss2.models.PartInfo(1, e1), oss2.models.PartInfo(2, e2)])
    assert ei.value.code == 'EntityTooSmall'
    bucket.abort_multipart_upload('small', up2)


@pytest.mark.parametrize('version', ['v1', 'v2', 'v4'])
def test_auth_versions_and_sign_url(emulator, version):
    import requests
    name = 'auth-%s-%s' % (version, uuid.uuid4().hex[:12])  # the session's emulator is shared
    auth = {'v1': oss2.Auth, 'v2': oss2.AuthV2, 'v4': oss2.AuthV4}[version](emulator.key_id, emulator.secret)
    b = oss2.Bucket(auth, emulator.endpoint, name, region='cn-hangzhou')
    b.create_bucket()
    b.put_object(u'sp ace/中文+#', b'signed')
    assert b.get_object(u'sp ace/中文+#').read() == b'signed'
    assert requests.get(b.sign_url('GET', u'sp ace/中文+#', 60), timeout=10).content == b'signed'
    bad = oss2.Bucket(type(auth)(emulator.key_id, 'wrong'), emulator.endpoint, name, region='cn-hangzhou')
    with pytest.raises(oss2.exceptions.SignatureDoesNotMatch):
        bad.get_object(u'sp ace/中文+#')
    with pytest.raises(oss2.exceptions.ServerError) as ei:
        oss2.Bucket(type(auth)('nobody', emulator.secret), emulator.endpoint, name, region='cn-hangzhou').get_object('x')
    assert ei.value.code == 'InvalidAccessKeyId'
    with pytest.raises(oss2.exceptions.AccessDenied):
        oss2.Bucket(oss2.AnonymousAuth(), emulator.endpoint, name).get_object('x')


def test_virtual_host_style(emulator):
    name = 'vhost-' + uuid.uuid4().hex[:12]  # the session's emulator is shared
    b = oss2.Bucket(oss2.Auth(emulator.key_id, emulator.secret), emulator.endpoint, name)
    b.create_bucket()
    b.put_object('k', b'v')
    # oss2 uses path style for IP endpoints; send a virtual-host request by hand
    import requests
    url = b.sign_url('GET', 'k', 60)
    path_and_query = url.split('/' + name, 1)[1]
    r = requests.get(emulator.endpoint + path_and_query, headers={'Host': name + '.oss.example.com'}, timeout=10)
    assert r.status_code == 200 and r.content == b'v'


def test_fault_injection_via_admin_endpoint(emulator, bucket):
    bucket.put_object('f', b'1')
    before = emulator.stats()
    emulator.set_faults('500:1.0:GetObject')
    try:
        with pytest.raises(oss2.exceptions.ServerError) as ei:
            bucket.get_object('f')
        assert ei.value.status == 500 and ei.value.code == 'InternalError'
        bucket.put_object('f2', b'2')  # other operations are unaffected
        emulator.set_faults('throttle:1.0:HeadObject')
        with pytest.raises(oss2.exceptions.ServerError) as ei:
            bucket.head_object('f')
        assert ei.value.status == 503
        emulator.set_faults('reset:1.0:GetObject')
        with pytest.raises(oss2.exceptions.RequestError):
            bucket.get_object('f')
        with urllib.request.urlopen(emulator.endpoint + '/-/faults', timeout=10) as r:
            assert r.read().decode().strip() == 'reset:1:GetObject'
    finally:
        emulator.set_faults('')
    assert bucket.get_object('f').read() == b'1'
    stats = emulator.stats()

    def more(kind, name):
        return stats[kind].get(name, 0) - before[kind].get(name, 0)

    assert more('faults_injected', '500') >= 1 and more('faults_injected', 'reset') >= 1
    assert more('by_operation', 'GetObject') >= 3


def test_restart_keeps_objects_and_uploads(tmp_path):
    data = str(tmp_path / 'd')
    h = start_process(data, AK, SK)
    try:
        b = oss2.Bucket(oss2.Auth(AK, SK), h.endpoint, 'persist')
        b.create_bucket()
        b.put_object(u'ключ', b'value')
        up = b.init_multipart_upload('big').upload_id
        etag = b.upload_part('big', up, 1, b'p' * 10).etag
    finally:
        h.kill()  # no clean shutdown
    h = start_process(data, AK, SK)
    try:
        b = oss2.Bucket(oss2.Auth(AK, SK), h.endpoint, 'persist')
        assert b.get_object(u'ключ').read() == b'value'
        assert [p.etag for p in b.list_parts('big', up).parts] == [etag]
        b.complete_multipart_upload('big', up, [oss2.models.PartInfo(1, etag)])
        assert b.get_object('big').read() == b'p' * 10
    finally:
        h.stop()
