// SPDX-License-Identifier: GPL-2.0
/*
 * A QEMU TCG plugin for scripts/vm-run --count-insns: counts how often each
 * translation block runs and writes "vaddr instructions executions" lines
 * to PREFIX.N each time the guest runs the block at address `mark` (vm-run
 * passes the kernel's ksys_sync, so `sync` in the guest ends a phase), and
 * once more at exit. scripts/lib/insn-report.py turns two phases into
 * instructions per symbol. Exact instruction counts, unlike sampling under
 * TCG; user space is counted too, but not symbolised. The counters are
 * not atomic: vm-run runs such a guest on one vCPU.
 *
 * Built against the plugin API of QEMU 7.2 (version 1), declared here: the
 * distribution ships no qemu-plugin.h.
 *   args: mark=0xADDR,out=PREFIX
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>

typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb;
typedef struct qemu_info_t qemu_info_t;
enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_CB_R_REGS, QEMU_PLUGIN_CB_RW_REGS };
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };
typedef void (*tb_trans_cb)(qemu_plugin_id_t, struct qemu_plugin_tb *);
typedef void (*udata_cb)(unsigned int vcpu_index, void *userdata);
typedef void (*atexit_cb)(qemu_plugin_id_t, void *);

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, tb_trans_cb cb);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
uint64_t qemu_plugin_tb_vaddr(const struct qemu_plugin_tb *tb);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb, enum qemu_plugin_op op, void *ptr, uint64_t imm);
void qemu_plugin_register_vcpu_tb_exec_cb(struct qemu_plugin_tb *tb, udata_cb cb, enum qemu_plugin_cb_flags flags, void *userdata);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, atexit_cb cb, void *userdata);

__attribute__((visibility("default"))) int qemu_plugin_version = 1;

struct ent { uint64_t vaddr; uint64_t n; uint64_t execs; struct ent *next; };
#define NB (1 << 20)
static struct ent **tab;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t mark;
static char prefix[256] = "/tmp/tbcount";
static int seq;

static void dump(void)
{
	char path[300];
	snprintf(path, sizeof(path), "%s.%d", prefix, seq++);
	FILE *f = fopen(path, "w");
	for (size_t i = 0; i < NB; i++)
		for (struct ent *e = tab[i]; e; e = e->next) {
			if (e->execs && f)
				fprintf(f, "%lx %lu %lu\n", e->vaddr, e->n, e->execs);
			e->execs = 0;
		}
	if (f)
		fclose(f);
}

static void on_mark(unsigned int vcpu, void *u)
{
	pthread_mutex_lock(&lock);
	dump();
	pthread_mutex_unlock(&lock);
}

static void trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
	uint64_t va = qemu_plugin_tb_vaddr(tb);
	uint64_t n = qemu_plugin_tb_n_insns(tb);
	size_t h = ((va >> 2) ^ (n << 13)) & (NB - 1);
	struct ent *e;
	pthread_mutex_lock(&lock);
	for (e = tab[h]; e; e = e->next)
		if (e->vaddr == va && e->n == n)
			break;
	if (!e) {
		e = calloc(1, sizeof(*e));
		if (!e) {
			pthread_mutex_unlock(&lock);
			return;
		}
		e->vaddr = va;
		e->n = n;
		e->next = tab[h];
		tab[h] = e;
	}
	pthread_mutex_unlock(&lock);
	qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &e->execs, 1);
	if (va == mark)
		qemu_plugin_register_vcpu_tb_exec_cb(tb, on_mark, QEMU_PLUGIN_CB_NO_REGS, NULL);
}

static void at_exit(qemu_plugin_id_t id, void *u)
{
	dump();
}

__attribute__((visibility("default"))) int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv)
{
	for (int i = 0; i < argc; i++) {
		if (!strncmp(argv[i], "mark=", 5))
			mark = strtoull(argv[i] + 5, NULL, 0);
		else if (!strncmp(argv[i], "out=", 4))
			snprintf(prefix, sizeof(prefix), "%s", argv[i] + 4);
	}
	tab = calloc(NB, sizeof(*tab));
	if (!tab)
		return -1;
	qemu_plugin_register_vcpu_tb_trans_cb(id, trans);
	qemu_plugin_register_atexit_cb(id, at_exit, NULL);
	return 0;
}
