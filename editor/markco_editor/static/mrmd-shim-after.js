/*
 * Runs right after the mrmd bundle (editor/mrmd.iife.js), before the UI's own script.
 *
 * The UI shows a notebook's images through an asset resolver that turns `../_assets/x.png`
 * into `file:///home/user/.../_assets/x.png` (right for Electron). Every resolver the UI installs
 * is wrapped so those URLs become `<BASE_PATH>files/...`, served by the editor from the user's
 * files (see mrmd-shim.js).
 */
(function () {
  'use strict';
  const facet = window.mrmd && window.mrmd.assetResolverFacet;
  if (!facet || typeof facet.of !== 'function') {
    console.warn('[markco-shim] mrmd.assetResolverFacet not found: images may not show');
    return;
  }
  const of = facet.of.bind(facet);
  facet.of = (resolver) => of((url) => window.markcoShim.browserAssetUrl(resolver(url)));
})();
