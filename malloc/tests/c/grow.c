/*
 * Waits for a line on stdin, then makes two size classes grow: 20000
 * blocks of 100 bytes (kmem_alloc_104) and 2000 of 3000 (kmem_alloc_3072),
 * frees them and exits. Driven by malloc/tests/observe.rs.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void)
{
	static void *small[20000], *mid[2000];
	char line[16];
	printf("ready\n");
	fflush(stdout);
	if (!fgets(line, sizeof(line), stdin))
		return 2;
	for (int i = 0; i < 20000; i++)
		memset(small[i] = malloc(100), 1, 100);
	for (int i = 0; i < 2000; i++)
		memset(mid[i] = malloc(3000), 2, 3000);
	for (int i = 0; i < 20000; i++)
		free(small[i]);
	for (int i = 0; i < 2000; i++)
		free(mid[i]);
	printf("done\n");
	return 0;
}
