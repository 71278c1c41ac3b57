import errno
import os
import random
import signal

import pytest

from ansible_collections.netbsd.pf.plugins.module_utils import abi
from ansible_collections.netbsd.pf.plugins.module_utils.pfdev import LockInterrupted, PfDevice, PfError, locked
from ansible_collections.netbsd.pf.plugins.module_utils.records import StateCodec
from ansible_collections.netbsd.pf.tests.pfemu.kernel import Kernel
from ansible_collections.netbsd.pf.tests.unit.plugins.module_utils.statefactory import random_fields


def test_empty_table_and_zero_copy_result(pfemu_kernel):
    with PfDevice() as dev:
        states = dev.get_states()
    assert isinstance(states, memoryview) and len(states) == 0


def test_get_states_returns_all_and_retries_on_full_buffer(pfemu_kernel):
    pfemu_kernel.fill(200)
    with PfDevice() as dev:
        assert len(dev.get_states()) == 200 * 240
        pfemu_kernel.grow_before_next_fetch(400)   # more states than the headroom
        states = dev.get_states(minimum_extra=1)
    assert len(states) == 600 * 240
    assert bytes(states) == bytes(pfemu_kernel.export_all())


def test_buffer_sized_before_the_fetch_takes_one_copy_or_grows(pfemu_kernel, monkeypatch):
    """states_buffer() then get_states(buffer): one DIOCGETSTATES if the table still fits, else a new size query."""
    pfemu_kernel.fill(1000, seed=5)
    requests = []
    real = pfemu_kernel.ioctl

    def traced(handle, request, arg, memory):
        requests.append(pfemu_kernel.layout.requests.get(request))
        return real(handle, request, arg, memory)
    monkeypatch.setattr(pfemu_kernel, "ioctl", traced)
    with PfDevice() as dev:
        buffer = dev.states_buffer()
        assert buffer.size == (1000 + 256) * 240, "2 % headroom, at least 256 records"
        del requests[:]
        assert len(dev.get_states(buffer)) == 1000 * 240 and requests == ["DIOCGETSTATES"]
        pfemu_kernel.fill(2000, seed=6)             # the table outgrew the buffer before the fetch
        del requests[:]
        states = dev.get_states(buffer)
    assert len(states) == 3000 * 240 and bytes(states) == bytes(pfemu_kernel.export_all())
    assert requests == ["DIOCGETSTATES"] * 3, "full reply, size query, fetch into the bigger buffer"


def test_status_limit_timeouts(pfemu_kernel):
    pfemu_kernel.fill(10)
    with PfDevice() as dev:
        status = dev.get_status()
        assert status["states"] == 10 and status["running"] is True
        assert status["hostid"] == pfemu_kernel.hostid and status["state_locked_drops"] == 0
        assert dev.get_limit() == 10000
        assert dev.get_timeouts() == abi.PFTM_DEFAULTS
        with pytest.raises(PfError) as info:
            dev.get_timeout(20)
    assert info.value.errno == errno.EINVAL and "timeout index" in str(info.value)


def _records(count, seed=3):
    rng = random.Random(seed)
    codec = StateCodec(abi.Abi.host().byte_order)
    out = []
    for _state in range(count):
        fields = random_fields(rng)
        fields["timeout"] = rng.randint(0, 14)
        out.append(codec.from_dict(fields))
    return b"".join(out)


def test_add_states_in_chunks_and_duplicate_is_explained(pfemu_kernel):
    block = _records(50)
    with PfDevice(writable=True) as dev:
        assert dev.add_states(block, chunk_records=16) == 50
        assert pfemu_kernel.states == 50
        with pytest.raises(PfError) as info:
            dev.add_states(block[:240])
    assert info.value.errno == errno.ENOMEM and info.value.request == "DIOCADDSTATES"
    assert "duplicate" in str(info.value) and info.value.added == 0


def test_add_states_refused_on_read_only_descriptor_before_any_ioctl(pfemu_kernel):
    with PfDevice() as dev:
        with pytest.raises(PfError, match="read-only descriptor"):
            dev.add_states(_records(1))
    assert pfemu_kernel.states == 0


def test_add_states_bad_timeout(pfemu_kernel):
    codec = StateCodec(abi.Abi.host().byte_order)
    fields = codec.to_dict(_records(1))
    fields["timeout"] = 20
    with PfDevice(writable=True) as dev:
        with pytest.raises(PfError) as info:
            dev.add_states(codec.from_dict(fields))
    assert info.value.errno == errno.EINVAL and "timeout index" in str(info.value)


def test_clear_count_is_modulo_256_and_kill(pfemu_kernel):
    pfemu_kernel.fill(300)
    with PfDevice(writable=True) as dev:
        inet6_tcp = sum(1 for v in StateCodec(abi.Abi.host().byte_order).iter_unpack(dev.get_states())
                        if v[45] == 24 and v[46] == 6)
        assert inet6_tcp > 0
        assert dev.kill_states(af=24, proto=6, dst=(bytes(16), bytes(16))) == inet6_tcp % 256
        remaining = len(dev.get_states()) // 240
        assert dev.clear_states() == remaining % 256
        assert len(dev.get_states()) == 0


def test_start_stop_errors(pfemu_kernel):
    with PfDevice(writable=True) as dev:
        with pytest.raises(PfError, match="already running"):
            dev.start()
        dev.stop()
        with pytest.raises(PfError, match="not running"):
            dev.stop()
    with PfDevice() as dev:
        with pytest.raises(PfError, match="read-only"):
            dev.start()


def test_open_missing_device():
    with pytest.raises(PfError) as info:
        PfDevice(path="/nonexistent/pf")
    assert info.value.errno == errno.ENOENT and "pf is not in the kernel" in str(info.value)


def test_locked_unlocks_on_exception(pfemu_kernel):
    with PfDevice() as dev:
        with pytest.raises(RuntimeError):
            with locked(dev):
                assert pfemu_kernel.lock
                raise RuntimeError("boom")
    assert not pfemu_kernel.lock


class Terminated(Exception):
    pass


def test_locked_unlocks_on_sigterm_and_redelivers(pfemu_kernel):
    seen = []

    def previous(signum, frame):
        seen.append(signum)
        raise Terminated()

    old = signal.signal(signal.SIGTERM, previous)
    try:
        with PfDevice() as dev:
            with pytest.raises((Terminated, LockInterrupted)):
                with locked(dev):
                    assert pfemu_kernel.lock
                    os.kill(os.getpid(), signal.SIGTERM)
                    for _tick in range(1000):  # the handler runs at the next bytecode boundary
                        pass
        assert not pfemu_kernel.lock
        assert seen == [signal.SIGTERM]
        assert signal.getsignal(signal.SIGTERM) is previous
    finally:
        signal.signal(signal.SIGTERM, old)


@pytest.mark.parametrize("name,client_abi", [("ilp32-be", abi.ILP32_BE), ("lp64-le", abi.LP64_LE),
                                             ("ilp32-le", abi.ILP32_LE)])
def test_foreign_abis(pfemu_syscalls, name, client_abi):
    kernel = Kernel(abi=name, seed=1)
    kernel.fill(20)
    with PfDevice(abi=client_abi, syscalls=pfemu_syscalls(kernel), writable=True) as dev:
        states = dev.get_states()
        assert len(states) == 20 * 240
        assert dev.get_status()["states"] == 20
        assert dev.clear_states() == 20


def test_word_size_mismatch_is_explained(pfemu_syscalls):
    kernel = Kernel(abi="lp64-le", seed=1)
    with PfDevice(abi=abi.ILP32_LE, syscalls=pfemu_syscalls(kernel), writable=True) as dev:
        with pytest.raises(PfError) as info:
            dev.get_states()
    assert info.value.errno == errno.ENODEV and "word size" in str(info.value)
