/* test_notify.c - the sd_notify datagrams as a service manager sees them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "../../supervisor/notify.h"

/* A manager socket in the abstract namespace; its fd. */
static int manager(char *name, size_t namelen)
{
	snprintf(name, namelen, "@vminfod-test-notify-%d", (int)getpid());
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	assert_true(fd >= 0);
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	size_t n = strlen(name);
	memcpy(a.sun_path, name, n);
	a.sun_path[0] = '\0';
	assert_int_equal(bind(fd, (struct sockaddr *)&a, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n)), 0);
	return fd;
}

static void next(int fd, char *out, size_t outlen)
{
	ssize_t n = recv(fd, out, outlen - 1, 0);
	assert_true(n >= 0);
	out[n] = '\0';
}

static void test_notify_disabled_without_socket(void **state)
{
	struct notify n;
	unsetenv("NOTIFY_SOCKET");
	assert_int_equal(notify_init(&n), 0);
	assert_false(notify_enabled(&n));
	assert_int_equal(notify_ready(&n, "x"), 0);
	notify_done(&n);
}

static void test_notify_ready_once_status_and_stopping(void **state)
{
	char name[64], msg[256];
	int fd = manager(name, sizeof(name));
	setenv("NOTIFY_SOCKET", name, 1);
	struct notify n;
	assert_int_equal(notify_init(&n), 0);
	assert_true(notify_enabled(&n));
	/* Children must not inherit it. */
	assert_null(getenv("NOTIFY_SOCKET"));

	assert_int_equal(notify_status(&n, "loading\nVMs"), 0);
	next(fd, msg, sizeof(msg));
	assert_string_equal(msg, "STATUS=loading VMs");
	assert_int_equal(notify_ready(&n, "working"), 0);
	next(fd, msg, sizeof(msg));
	assert_string_equal(msg, "READY=1\nSTATUS=working");
	assert_int_equal(notify_ready(&n, "working"), 0);  /* once only */
	assert_int_equal(recv(fd, msg, sizeof(msg), 0), -1);
	assert_int_equal(errno, EAGAIN);
	assert_int_equal(notify_stopping(&n, "stopping"), 0);
	next(fd, msg, sizeof(msg));
	assert_string_equal(msg, "STOPPING=1\nSTATUS=stopping");
	notify_done(&n);
	close(fd);
}

static void test_notify_rejects_relative_address(void **state)
{
	struct notify n;
	setenv("NOTIFY_SOCKET", "relative/path", 1);
	assert_int_equal(notify_init(&n), -EINVAL);
	assert_false(notify_enabled(&n));
	notify_done(&n);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_notify_disabled_without_socket),
		cmocka_unit_test(test_notify_ready_once_status_and_stopping),
		cmocka_unit_test(test_notify_rejects_relative_address),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
