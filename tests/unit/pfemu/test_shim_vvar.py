"""The migration guide's hang on the ssh fleet, with the page that caused it: Linux's ``[vvar]``.

/proc/self/maps lists every ``[vvar]`` page readable, but some of them fault on any access
(on the 6.x kernels of these machines, the second page of ``[vvar]`` and of ``[vvar_vclock]``).
A delegated ``states_restore`` over ssh had its record buffer in the anonymous mapping right below
``[vvar]``; the daemon's old copyin read ahead past the records into the faulting page, the shim's
send failed half-way, and the restore's next ioctl on the same descriptor was taken for the rest
of the copyin: the module and the daemon (under its kernel lock) each waited for the other, and
the lease watchdog's unlock behind them. ``test_shim_memory.py`` models that page with a file
mapped past its end; this test uses the real one, found at run time.
"""

import errno
import textwrap

import pytest

from ansible_collections.netbsd.pf.tests.unit.pfemu.test_shim_memory import Host

FIND_FAULTING_VVAR_PAGE = """
import socket
def faults(address):
    sender, receiver = socket.socketpair()
    try:
        sender.send(memoryview((ctypes.c_char * PAGE).from_address(address)).cast("B"))
        return False
    except OSError as error:
        return error.errno == errno.EFAULT
    finally:
        sender.close()
        receiver.close()

def faulting_vvar_page():
    # A listed-readable [vvar*] page that faults, after a page that reads: where the hang began.
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            if len(fields) < 6 or not fields[5].startswith("[vvar") or fields[1][0] != "r":
                continue
            start, end = (int(part, 16) for part in fields[0].split("-"))
            for page in range(start + PAGE, end, PAGE):
                if faults(page) and not faults(page - PAGE):
                    return page
    return None
"""


@pytest.fixture(name="host")
def emulated_host(tmp_path):
    host = Host(tmp_path)
    yield host
    host.stop()


def test_status_argument_ending_where_a_vvar_page_faults_is_efault_and_the_descriptor_goes_on(host):
    seen = host.run(FIND_FAULTING_VVAR_PAGE + textwrap.dedent("""
        page = faulting_vvar_page()
        if page is None:
            print(json.dumps({"page": None}))
            sys.exit(0)
        fd = os.open("/dev/pf", os.O_RDWR)
        # The 424-byte argument is read from the readable page just below the faulting one; the
        # answer cannot be copied back into read-only [vvar]: EFAULT, as sys_ioctl() gives.
        status = attempt(lambda: fcntl.ioctl(fd, DIOCGETSTATUS, page - 424))
        print(json.dumps({"page": page, "status": status, "states": states(fd)}))
    """))
    if seen["page"] is None:
        pytest.skip("no [vvar] page of this kernel faults (test_shim_memory.py covers the same case with a file)")
    assert (seen["status"], seen["states"]) == (errno.EFAULT, 0)
    assert not host.host.refusals
