/**
 * The dma_resv tests of dma-resv.test.ts again, on reservation objects in the
 * shared table: each object is moved there (by reading `slot`) right after
 * `DmaResv.create()`, so both forms — private to a thread, and shared — are held
 * to the same behaviour. (node --test runs each file in its own process, so the
 * setting reaches only this run.)
 */
process.env['DMABUF_TEST_RESV_FORM'] = 'shared';
await import('./dma-resv.test.js');
