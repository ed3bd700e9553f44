/*
 * A guest that plugs one virtio-mem block by the protocol and then touches memory it did not
 * plug: tests/unplugged_memory.rs boots it to see what Accordion does about it.
 *
 * It runs in 32-bit protected mode (PVH entry), turns on PAE paging to reach the device's
 * BAR and region above 4 GiB, finds the virtio-mem function on bus 0 through the 0xCF8
 * ports, brings it up as a minimal virtio 1.x driver (features VERSION_1 and
 * UNPLUGGED_INACCESSIBLE, queue 0 only, no interrupts: it polls the used ring), and sends
 * one PLUG of the region's first PLUG_MIB MiB (default: one 2 MiB block). It works with
 * any virtio-mem-pci device on bus 0 whose BARs are placed (Accordion's, Cloud Hypervisor's,
 * QEMU's). With -DBENCH it then prints A (or N, B, E) and halts: scripts/bench-memslots.sh
 * uses it to plug memory into each VMM. Otherwise, one letter each on the serial port:
 *
 *   A  the PLUG was acknowledged (otherwise N, B or E for NACK, BUSY, ERROR; then it stops)
 *   P  a pattern written to the plugged block reads back (otherwise X)
 *   Z  a write and a read 256 MiB into the region, in a slot with no plugged block, read
 *      zeros (otherwise P if the write landed, X for anything else)
 *
 * and a newline. It then waits for a byte on the serial port (the test looks at the host
 * meanwhile), prints T and a newline, and touches the second block: unplugged, in the slot
 * the plug mapped. If the VM goes on at all, it prints what that read gave (Z, P or X).
 *
 * Every failure to find or set up the device prints ! and a letter, and halts.
 * Built by tests/probes/build.sh.
 */

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

#define PDPT 0x200000u          /* page tables: PDPT, then one page directory per GiB */
#define QUEUE 0x300000u         /* descriptors, then avail and used rings a page apart */
#define REQUEST 0x304000u
#define RESPONSE 0x304100u
#define GIB 0x40000000u
#define VA_REGION (1 * GIB)     /* the region's first GiB */
#define VA_BAR (2 * GIB)        /* the GiB holding BAR 0 */
#define BLOCK_PROBE_UNMAPPED (256u << 20)
#ifndef PLUG_MIB
#define PLUG_MIB 2
#endif

__attribute__((section(".text.start"), naked)) void _start(void)
{
    __asm__ volatile("mov $0x80000, %esp\n\tcall main\n1:\thlt\n\tjmp 1b");
}

static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static inline u8 inb(u16 port) { u8 v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline void outl(u16 port, u32 v) { __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port)); }
static inline u32 inl(u16 port) { u32 v; __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port)); return v; }

static void put(char c) { outb(0x3f8, (u8)c); }

static void stop(char why)
{
    put('!');
    put(why);
    put('\n');
    for (;;)
        __asm__ volatile("hlt");
}

static u32 pci_read(u32 dev, u32 off)
{
    outl(0xcf8, 0x80000000u | dev << 11 | (off & 0xfc));
    return inl(0xcfc);
}

static void pci_write(u32 dev, u32 off, u32 v)
{
    outl(0xcf8, 0x80000000u | dev << 11 | (off & 0xfc));
    outl(0xcfc, v);
}

#define R8(a) (*(volatile u8 *)(a))
#define R16(a) (*(volatile u16 *)(a))
#define R32(a) (*(volatile u32 *)(a))

/* Maps virtual GiB `slot` (1..3) to the GiB of physical memory at `pa` (GiB aligned). */
static void map_gib(u32 slot, u64 pa)
{
    volatile u64 *pd = (volatile u64 *)(PDPT + 0x1000 * (slot + 1));
    for (u32 i = 0; i < 512; i++)
        pd[i] = (pa + ((u64)i << 21)) | 0x83; /* present, writable, 2 MiB page */
    ((volatile u64 *)PDPT)[slot] = (u64)(PDPT + 0x1000 * (slot + 1)) | 1;
    __asm__ volatile("mov %0, %%cr3" : : "r"(PDPT) : "memory"); /* flush */
}

static void paging_on(void)
{
    for (u32 i = 0; i < 5 * 0x1000 / 4; i++)
        R32(PDPT + 4 * i) = 0;
    map_gib(0, 0); /* identity: code, stack, page tables, the queue */
    u32 cr4, cr0;
    __asm__ volatile("mov %%cr4, %0" : "=r"(cr4));
    __asm__ volatile("mov %0, %%cr4" : : "r"(cr4 | 0x20)); /* PAE */
    __asm__ volatile("mov %0, %%cr3" : : "r"(PDPT));
    __asm__ volatile("mov %%cr0, %0" : "=r"(cr0));
    __asm__ volatile("mov %0, %%cr0" : : "r"(cr0 | 0x80000000u) : "memory");
}

/* Writes `v` at `va` and reads it back. */
static char probe(u32 va, u32 v)
{
    R32(va) = v;
    u32 got = R32(va);
    return got == v ? 'P' : got == 0 ? 'Z' : 'X';
}

int main(void)
{
    paging_on();

    u32 dev = 0;
    while (dev < 32 && pci_read(dev, 0) != (0x1058u << 16 | 0x1af4u))
        dev++;
    if (dev == 32)
        stop('D');
    /* The virtio capabilities: common, notify and device configuration, as offsets in one
       BAR (every implementation puts them in one). */
    u32 common = 0, notify = 0, mult = 0, devcfg = 0, bar_index = 6, found = 0;
    for (u32 cap = pci_read(dev, 0x34) & 0xff; cap; cap = pci_read(dev, cap) >> 8 & 0xff) {
        u32 head = pci_read(dev, cap);
        if ((head & 0xff) != 0x09)
            continue;
        u32 bar_of_cap = pci_read(dev, cap + 4) & 0xff;
        u32 at = pci_read(dev, cap + 8);
        switch (head >> 24) {
        case 1: common = at; bar_index = bar_of_cap; found |= 1; break;
        case 2: notify = at; mult = pci_read(dev, cap + 16); found |= 2; break;
        case 4: devcfg = at; found |= 4; break;
        }
    }
    if (found != 7 || bar_index > 5)
        stop('C');
    u32 bar_lo = pci_read(dev, 0x10 + 4 * bar_index);
    u64 bar = bar_lo & ~0xfu;
    if ((bar_lo & 6) == 4) /* 64-bit */
        bar |= (u64)pci_read(dev, 0x14 + 4 * bar_index) << 32;
    if (bar == 0)
        stop('B');
    map_gib(2, bar & ~(u64)(GIB - 1));
    u32 bar_va = VA_BAR + (u32)(bar & (GIB - 1));
    common += bar_va;
    notify += bar_va;
    devcfg += bar_va;
    pci_write(dev, 0x04, pci_read(dev, 0x04) | 0x6); /* memory space, bus master */

    R8(common + 0x14) = 0;     /* reset */
    R8(common + 0x14) = 1 | 2; /* ACKNOWLEDGE | DRIVER */
    R32(common + 0x00) = 0;
    u32 lo = R32(common + 0x04);
    R32(common + 0x00) = 1;
    u32 hi = R32(common + 0x04);
    R32(common + 0x08) = 0;
    R32(common + 0x0c) = lo & 2; /* UNPLUGGED_INACCESSIBLE */
    R32(common + 0x08) = 1;
    R32(common + 0x0c) = hi & 1; /* VERSION_1 */
    R8(common + 0x14) = 1 | 2 | 8;
    if (!(R8(common + 0x14) & 8))
        stop('F');

    u16 size = 8;
    R16(common + 0x16) = 0;
    if (R16(common + 0x18) < size)
        stop('Q');
    R16(common + 0x18) = size;
    for (u32 i = 0; i < 0x5000 / 4; i++)
        R32(QUEUE + 4 * i) = 0;
    R32(common + 0x20) = QUEUE;
    R32(common + 0x24) = 0;
    R32(common + 0x28) = QUEUE + 0x1000;
    R32(common + 0x2c) = 0;
    R32(common + 0x30) = QUEUE + 0x2000;
    R32(common + 0x34) = 0;
    R16(common + 0x1c) = 1;
    u32 kick = notify + R16(common + 0x1e) * mult;
    R8(common + 0x14) = 1 | 2 | 8 | 4; /* DRIVER_OK */

    /* The region, from the device's configuration. */
    u64 block = (u64)R32(devcfg + 0x04) << 32 | R32(devcfg + 0x00);
    u64 region = (u64)R32(devcfg + 0x14) << 32 | R32(devcfg + 0x10);
    map_gib(1, region);

    /* PLUG of the first PLUG_MIB MiB: request readable, response writable. */
    u32 blocks = 0;
    for (u64 plugged = 0; plugged < ((u64)PLUG_MIB << 20); plugged += block)
        blocks++;
    R16(REQUEST) = 0;
    R32(REQUEST + 8) = (u32)region;
    R32(REQUEST + 12) = (u32)(region >> 32);
    R16(REQUEST + 16) = (u16)blocks;
    volatile u32 *desc = (volatile u32 *)QUEUE;
    desc[0] = REQUEST; desc[1] = 0; desc[2] = 24; desc[3] = 1 | 1 << 16;      /* NEXT, next 1 */
    desc[4] = RESPONSE; desc[5] = 0; desc[6] = 16; desc[7] = 2;               /* WRITE */
    R16(QUEUE + 0x1000 + 4) = 0; /* ring[0]: chain 0 */
    __asm__ volatile("" : : : "memory");
    R16(QUEUE + 0x1000 + 2) = 1; /* idx */
    R16(kick) = 0;
    for (u32 spin = 0; R16(QUEUE + 0x2000 + 2) != 1; spin++)
        if (spin > 400000000u)
            stop('T');
    u16 answer = R16(RESPONSE);
    put(answer == 0 ? 'A' : answer == 1 ? 'N' : answer == 2 ? 'B' : 'E');
    if (answer != 0) {
        put('\n');
        stop('P');
    }
#ifdef BENCH
    put('\n');
    for (;;)
        __asm__ volatile("hlt");
#endif

    put(probe(VA_REGION, 0x5a5a5a5a));
    put(probe(VA_REGION + BLOCK_PROBE_UNMAPPED, 0x5a5a5a5a));
    put('\n');
    while (!(inb(0x3fd) & 1)) /* line status: data ready */
        ;
    (void)inb(0x3f8);
    put('T');
    put('\n');
    put(probe(VA_REGION + (u32)block, 0x5a5a5a5a));
    put('\n');
    for (;;)
        __asm__ volatile("hlt");
}
